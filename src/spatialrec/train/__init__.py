"""A small plain-PyTorch training loop for segmentation: :func:`fit` and :func:`evaluate`.

- :mod:`spatialrec.train.loop`: the loop (early stopping, AMP, gradient clipping, CSV and JSON
  metrics, progress bar).
- :mod:`spatialrec.train.checkpoint`: atomic, checked checkpoints holding everything a resume needs.
- :mod:`spatialrec.train.distributed`: data-parallel runs under ``torchrun``.

Importing this package needs only torch and numpy; tqdm (``spatialrec[data]``) is imported when a
progress bar is shown.
"""

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .distributed import DistContext, ShardedEpochSampler
from .loop import CSV_COLUMNS, FitResult, NonFiniteLossError, evaluate, fit

__all__ = [
    "CHECKPOINT_FORMAT",
    "CSV_COLUMNS",
    "CheckpointError",
    "DistContext",
    "FitResult",
    "NonFiniteLossError",
    "ShardedEpochSampler",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]
