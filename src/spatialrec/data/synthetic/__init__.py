"""Synthetic segmentation tasks that need long-range context.

Every task yields the same items (``{"image": float32 (1, H, W), "mask": float32 (1, H, W) 0/1,
"id": str}``), is generated on the fly from ``numpy.random.default_rng([seed, split_code, index,
...])`` (deterministic in seed, split and index, in any process) and exposes ``layout(index)``
(the random choices) and ``render(layout)`` (the drawing), so a test can change only the far-away
cue of a sample and watch the label change.

Each task has a kind (:data:`TASK_KINDS`):

- ``"statistic"``: some global statistic of the image (the grey level of a far cue, a count, the
  shape of the one bright object) decides the label, so a global pooling path can solve it:
  ``cue_any_side`` (:class:`SyntheticLongRange`), ``inside_outside``, ``same_shape``,
  ``minority_kind``, ``connected_to_marker`` (the dot's pixel count varies with the curve);
- ``"relational"``: a spatial relation decides it, and the labels can flip while the noiseless
  image histogram stays exactly the same: ``reachable_along_curve``, ``nearer_marker``,
  ``same_band``, ``inside_which_region``.

:data:`TASK_REGISTRY` (with :data:`HOLISTIC_TASKS`, its name -> factory view), :func:`make_task`,
:func:`task_splits` and :func:`list_tasks` build and list them by name; ``docs/holistic.md`` has
the table and the benchmark (``benchmarks/bench_holistic.py``).

Example:
    >>> from spatialrec.data.synthetic import make_task, task_kind
    >>> ds = make_task("nearer_marker", 2, seed=0)
    >>> ds[0]["image"].shape, task_kind("nearer_marker")
    (torch.Size([1, 48, 48]), 'relational')
"""

from ._draw import SHAPE_KINDS
from .base import TASK_KINDS, TaskSettings, Transform
from .contours import ContourLayout, InsideOutside, InsideWhichRegion, RegionsLayout
from .cue import SyntheticLayout, SyntheticLongRange, synthetic_splits
from .curves import ConnectedToMarker, CurvesLayout, ReachableAlongCurve
from .markers import BandsLayout, MarkersLayout, NearerMarker, SameBand
from .objects import MinorityKind, ObjectsLayout, SameShapeAsReference
from .registry import HOLISTIC_TASKS, TASK_REGISTRY, TaskSpec, list_tasks, make_task, task_kind, task_splits

__all__ = [
    "BandsLayout",
    "ConnectedToMarker",
    "ReachableAlongCurve",
    "ContourLayout",
    "CurvesLayout",
    "HOLISTIC_TASKS",
    "InsideOutside",
    "InsideWhichRegion",
    "MarkersLayout",
    "MinorityKind",
    "NearerMarker",
    "ObjectsLayout",
    "RegionsLayout",
    "SHAPE_KINDS",
    "SameBand",
    "SameShapeAsReference",
    "SyntheticLayout",
    "SyntheticLongRange",
    "TASK_KINDS",
    "TASK_REGISTRY",
    "TaskSettings",
    "TaskSpec",
    "Transform",
    "list_tasks",
    "make_task",
    "synthetic_splits",
    "task_kind",
    "task_splits",
]
