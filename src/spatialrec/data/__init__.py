"""Data sets: readers for DSB2018, CVC-ClinicDB, LiTS and SegTHOR, synthetic long-range tasks,
group-wise splits and joint image/mask augmentation.

Every data set yields ``{"image": float32 (C, H, W), "mask": float32 (K, H, W) 0/1, "id": str}``
(plus ``"spacing": float32 (2,)``, the pixel size in mm (row, col), for CT slices) and has
``in_channels`` (C) and ``num_classes`` (K) attributes. All take ``split="train" | "val" | "test"
| "all"``, ``val_fraction`` (default 0.1), ``test_fraction`` (default 0.2) and ``seed`` (default 0)
and never put one patient / volume / sequence in two splits; :func:`make_splits` builds all three.
Pillow and nibabel are imported only when a reader is constructed (``pip install 'spatialrec[data]'``).
See ``docs/data.md`` for the layouts and where to get each data set.
"""

from ._io import DatasetError
from .cvc_clinicdb import CVCClinicDB
from .dsb2018 import DSB2018
from .lits import LiTS
from .patches3d import RandomPatchDataset3d  # volumetric training: random patches of whole CT volumes
from .segthor import SEGTHOR_ORGANS, SegTHOR
from .splits import assign_splits, make_splits
from .synthetic import (
    HOLISTIC_TASKS,
    SHAPE_KINDS,
    ConnectedToMarker,
    ReachableAlongCurve,
    InsideOutside,
    InsideWhichRegion,
    MinorityKind,
    NearerMarker,
    SameBand,
    SameShapeAsReference,
    SyntheticLongRange,
    TASK_REGISTRY,
    list_tasks,
    make_task,
    synthetic_splits,
    task_splits,
)
from .transforms import Compose, IntensityJitter, RandomAffine, RandomFlip, RandomRot90, default_augmentation
from .volumes3d import CTVolumes

__all__ = [
    "CTVolumes",
    "CVCClinicDB",
    "Compose",
    "ConnectedToMarker",
    "ReachableAlongCurve",
    "DSB2018",
    "DatasetError",
    "HOLISTIC_TASKS",
    "InsideOutside",
    "InsideWhichRegion",
    "IntensityJitter",
    "LiTS",
    "MinorityKind",
    "NearerMarker",
    "RandomAffine",
    "RandomFlip",
    "RandomPatchDataset3d",
    "RandomRot90",
    "SEGTHOR_ORGANS",
    "SHAPE_KINDS",
    "SameBand",
    "SameShapeAsReference",
    "SegTHOR",
    "SyntheticLongRange",
    "TASK_REGISTRY",
    "assign_splits",
    "default_augmentation",
    "list_tasks",
    "make_splits",
    "make_task",
    "synthetic_splits",
    "task_splits",
]

