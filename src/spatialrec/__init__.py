"""spatialrec: spatial-recurrence (Spatial Dependency Network) layers for image segmentation.

The public API, re-exported from the submodules:

- layers: :class:`SpatialDependencyLayer`, :class:`ResidualSDN`, :class:`DirectionalGRU2d`
- ops: :func:`directional_gru_scan` (and :mod:`spatialrec.ops` for backends)
- compat: :func:`convert_published_state_dict`
- models: :func:`create_model`, :func:`list_models`, :func:`register_model`, :class:`UNet`,
  :class:`UNetPlusPlus`, :class:`TransUNet`; blocks: :mod:`spatialrec.blocks`
- :mod:`spatialrec.losses`, :mod:`spatialrec.metrics`, :mod:`spatialrec.data` (readers, synthetic set)
"""

from . import blocks, models, ops
from . import data, losses, metrics  # noqa: E402  (readers import Pillow/nibabel lazily)
from .compat import convert_published_state_dict
from .layers import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from .models import TransUNet, UNet, UNetPlusPlus, create_model, list_models, register_model
from .ops import directional_gru_scan, directional_gru_scan_sequence

__version__ = "0.1.0"

__all__ = [
    "DirectionalGRU2d",
    "ResidualSDN",
    "SpatialDependencyLayer",
    "TransUNet",
    "UNet",
    "UNetPlusPlus",
    "blocks",
    "create_model",
    "list_models",
    "models",
    "register_model",
    "convert_published_state_dict",
    "data",
    "directional_gru_scan",
    "directional_gru_scan_sequence",
    "losses",
    "metrics",
    "ops",
]
