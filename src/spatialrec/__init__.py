"""spatialrec: spatial-recurrence (Spatial Dependency Network) layers for image segmentation.

The public API, re-exported from the submodules:

- layers: :class:`SpatialDependencyLayer`, :class:`ResidualSDN`, :class:`DirectionalGRU`, for maps
  and volumes alike (``spatial_dims=2`` or ``3``)
- ops: :func:`directional_gru_scan`, :func:`directional_gru_scan_sequence` (and :mod:`spatialrec.ops` for backends)
- :mod:`spatialrec.options`: process-wide options (scan backend, fused gate memory, Triton
  precision, cache folder) and the Triton fallback state
- compat: :func:`convert_published_state_dict`
- convert: :func:`add_spatial_recurrence`, :func:`sdn_modules`, :func:`freeze_except_sdn`
- models: :func:`create_model`, :func:`list_models`, :func:`register_model`, :class:`UNet`,
  :class:`UNetPlusPlus`, :class:`TransUNet`; blocks: :mod:`spatialrec.blocks`
- :mod:`spatialrec.losses`, :mod:`spatialrec.metrics`, :mod:`spatialrec.data` (readers, synthetic set)
- train: :func:`fit`, :func:`evaluate` (:mod:`spatialrec.train`: the training loop, checkpoints, torchrun)
- 3D: the same classes with ``spatial_dims=3`` (the names ``SpatialDependencyLayer3d``,
  ``ResidualSDN3d``, ``DirectionalGRU3d``, ``directional_gru_scan3d`` remain as thin aliases),
  :func:`sliding_window_inference`, models ``unet3d`` and ``sdn_unet3d``
"""

from . import blocks, data, losses, metrics, models, ops, options  # data readers import Pillow/nibabel lazily
from .compat import convert_published_state_dict
from .convert import add_spatial_recurrence, freeze_except_sdn, sdn_modules
from .inference import sliding_window_inference
from .layers import (
    DirectionalGRU,
    DirectionalGRU2d,
    DirectionalGRU3d,
    ResidualSDN,
    ResidualSDN3d,
    SpatialDependencyLayer,
    SpatialDependencyLayer3d,
)
from .models import TransUNet, UNet, UNetPlusPlus, create_model, list_models, register_model
from .ops import directional_gru_scan, directional_gru_scan3d, directional_gru_scan_sequence
from .train import evaluate, fit

# The one place the version is written: pyproject.toml reads it from here (tool.hatch.version).
# A ".devN" suffix marks a tree after the last release; see CHANGELOG.md.
__version__ = "0.2.0.dev0"

__all__ = [
    # layers and ops
    "DirectionalGRU",
    "DirectionalGRU2d",
    "DirectionalGRU3d",
    "ResidualSDN",
    "ResidualSDN3d",
    "SpatialDependencyLayer",
    "SpatialDependencyLayer3d",
    "directional_gru_scan",
    "directional_gru_scan3d",
    "directional_gru_scan_sequence",
    # models
    "TransUNet",
    "UNet",
    "UNetPlusPlus",
    "create_model",
    "list_models",
    "register_model",
    # putting SDN into existing networks, published weights
    "add_spatial_recurrence",
    "convert_published_state_dict",
    "freeze_except_sdn",
    "sdn_modules",
    # training and inference
    "evaluate",
    "fit",
    "sliding_window_inference",
    # sub-modules
    "blocks",
    "data",
    "losses",
    "metrics",
    "models",
    "ops",
    "options",
]
