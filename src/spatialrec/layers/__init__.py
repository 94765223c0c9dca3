"""``nn.Module``s built on :mod:`spatialrec.ops`, for maps and volumes (``spatial_dims`` 2 or 3)."""

from . import sdn
from .sdn import *

__all__ = sdn.__all__
