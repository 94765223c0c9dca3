"""``nn.Module``s built on :mod:`spatialrec.ops`, for maps and volumes (``spatial_dims`` 2 or 3)."""

from .sdn import (
    COMPOSITIONS,
    DEFAULT_CELL,
    DEFAULT_STATE_SIZE,
    PUBLISHED_CELL,
    DirectionalGRU,
    DirectionalGRU2d,
    DirectionalGRU3d,
    ResidualSDN,
    ResidualSDN3d,
    SpatialDependencyLayer,
    SpatialDependencyLayer3d,
)

__all__ = [
    "COMPOSITIONS",
    "DEFAULT_CELL",
    "DEFAULT_STATE_SIZE",
    "PUBLISHED_CELL",
    "DirectionalGRU",
    "DirectionalGRU2d",
    "DirectionalGRU3d",
    "ResidualSDN",
    "ResidualSDN3d",
    "SpatialDependencyLayer",
    "SpatialDependencyLayer3d",
]
