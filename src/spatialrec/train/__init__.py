"""A small plain-PyTorch training loop for segmentation: :func:`fit` and :func:`evaluate`.

- :mod:`spatialrec.train.loop`: :func:`fit`, which orchestrates the pieces below.
- :mod:`spatialrec.train.config`: the checked settings of a run (:class:`FitConfig`).
- :mod:`spatialrec.train.steps`: one training epoch, one validation pass (AMP, gradient clipping,
  progress bar).
- :mod:`spatialrec.train.checkpoint`: the checkpoint format: schema, checksum, atomic save,
  checked load.
- :mod:`spatialrec.train.rng`: snapshots of the global random generators.
- :mod:`spatialrec.train.resume`: :class:`TrainState` and resuming a run from a checkpoint.
- :mod:`spatialrec.train.runfiles`: ``metrics.csv``, checkpoints and ``metrics.json`` in ``out_dir``.
- :mod:`spatialrec.train.evaluation`: :func:`evaluate`, whose result has the format of
  :mod:`spatialrec.summary` (the same as :func:`spatialrec.inference.evaluate_volumes`).
- :mod:`spatialrec.train.distributed`: data-parallel runs under ``torchrun``.

Importing this package needs only torch and numpy; tqdm (``spatialrec[data]``) is imported when a
progress bar is shown.
"""

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .config import FitConfig
from .distributed import DistContext, ShardedEpochSampler
from .errors import NonFiniteLossError, NonFiniteStateError, TrainingDivergedError
from .evaluation import evaluate
from .loop import FitResult, fit
from .resume import TrainState
from .runfiles import CSV_COLUMNS

__all__ = [
    "CHECKPOINT_FORMAT",
    "CSV_COLUMNS",
    "CheckpointError",
    "DistContext",
    "FitConfig",
    "FitResult",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "ShardedEpochSampler",
    "TrainState",
    "TrainingDivergedError",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]
