"""``nn.Module``s built on :mod:`spatialrec.ops`."""

from .sdn import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from .sdn3d import DirectionalGRU3d, ResidualSDN3d, SpatialDependencyLayer3d

__all__ = ["DirectionalGRU2d", "ResidualSDN", "SpatialDependencyLayer"]
__all__ += ["DirectionalGRU3d", "ResidualSDN3d", "SpatialDependencyLayer3d"]
