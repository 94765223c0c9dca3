"""``nn.Module``s built on :mod:`spatialrec.ops`."""

from .sdn import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer

__all__ = ["DirectionalGRU2d", "ResidualSDN", "SpatialDependencyLayer"]
