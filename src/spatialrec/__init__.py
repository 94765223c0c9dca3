"""spatialrec: spatial-recurrence (Spatial Dependency Network) layers for image segmentation.

The public API, re-exported from the submodules:

- layers: :class:`SpatialDependencyLayer`, :class:`ResidualSDN`, :class:`DirectionalGRU2d`
- ops: :func:`directional_gru_scan` (and :mod:`spatialrec.ops` for backends)
- compat: :func:`convert_published_state_dict`
- :mod:`spatialrec.losses`, :mod:`spatialrec.metrics`, :mod:`spatialrec.data` (readers, synthetic set)
- train: :func:`fit`, :func:`evaluate` (:mod:`spatialrec.train`: the training loop, checkpoints, torchrun)
"""

from . import ops
from . import data, losses, metrics  # noqa: E402  (readers import Pillow/nibabel lazily)
from .compat import convert_published_state_dict
from .layers import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from .ops import directional_gru_scan
from .train import evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "DirectionalGRU2d",
    "ResidualSDN",
    "SpatialDependencyLayer",
    "convert_published_state_dict",
    "data",
    "directional_gru_scan",
    "evaluate",
    "fit",
    "losses",
    "metrics",
    "ops",
]
