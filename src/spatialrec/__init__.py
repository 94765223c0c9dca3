"""spatialrec: spatial-recurrence (Spatial Dependency Network) layers for image segmentation.

The public API, re-exported from the submodules:

- layers: :class:`SpatialDependencyLayer`, :class:`ResidualSDN`, :class:`DirectionalGRU2d`
- ops: :func:`directional_gru_scan` (and :mod:`spatialrec.ops` for backends)
- compat: :func:`convert_published_state_dict`
- convert: :func:`add_spatial_recurrence`, :func:`sdn_modules`, :func:`freeze_except_sdn`
"""

from . import ops
from .compat import convert_published_state_dict
from .convert import add_spatial_recurrence, freeze_except_sdn, sdn_modules
from .layers import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from .ops import directional_gru_scan

__version__ = "0.1.0"

__all__ = [
    "DirectionalGRU2d",
    "ResidualSDN",
    "SpatialDependencyLayer",
    "add_spatial_recurrence",
    "convert_published_state_dict",
    "directional_gru_scan",
    "freeze_except_sdn",
    "ops",
    "sdn_modules",
]
