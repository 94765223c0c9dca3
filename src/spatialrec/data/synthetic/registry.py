"""The one registry of synthetic tasks: each task by name, with its kind.

:data:`TASK_REGISTRY` maps a name to a :class:`TaskSpec` (the factory and the kind,
``"statistic"`` or ``"relational"``, see :data:`~spatialrec.data.synthetic.TASK_KINDS`);
:data:`HOLISTIC_TASKS` is a read-only view of the same registry, name -> factory.
:func:`make_task` and :func:`task_splits` build any task by name, :func:`list_tasks` lists them
(optionally of one kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

from torch.utils.data import Dataset

from ...checks import check_choice
from .base import TASK_KINDS
from .contours import InsideOutside, InsideWhichRegion
from .cue import SyntheticLongRange
from .curves import ConnectedToMarker, ReachableAlongCurve
from .markers import NearerMarker, SameBand
from .objects import MinorityKind, SameShapeAsReference


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: ``factory(num_samples=..., split=..., seed=..., **knobs)`` returns the
    data set; ``kind`` is ``"statistic"`` or ``"relational"``."""

    name: str
    factory: Callable[..., Dataset]
    kind: str


def _cue_any_side(**kwargs: Any) -> SyntheticLongRange:
    kwargs.setdefault("image_size", 48)
    return SyntheticLongRange(cue_position="random", **kwargs)


def _spec(name: str, factory: Callable[..., Dataset], kind: str) -> tuple[str, TaskSpec]:
    return name, TaskSpec(name, factory, check_choice("kind", kind, TASK_KINDS))


#: Every synthetic task, by name, in benchmark order (statistic tasks first). ``cue_any_side`` is
#: :class:`SyntheticLongRange` with ``cue_position="random"`` (the cue on any of the four borders,
#: so a model that sweeps in some directions only fails on some borders), default image 48; it is
#: the cue task itself, so the fixed-cue demo has no entry of its own. Every other task defaults
#: to 48 x 48.
TASK_REGISTRY: Mapping[str, TaskSpec] = dict(
    [
        _spec("cue_any_side", _cue_any_side, SyntheticLongRange.kind),
        _spec("inside_outside", InsideOutside, InsideOutside.kind),
        _spec("same_shape", SameShapeAsReference, SameShapeAsReference.kind),
        _spec("minority_kind", MinorityKind, MinorityKind.kind),
        _spec("connected_to_marker", ConnectedToMarker, ConnectedToMarker.kind),
        _spec("reachable_along_curve", ReachableAlongCurve, ReachableAlongCurve.kind),
        _spec("nearer_marker", NearerMarker, NearerMarker.kind),
        _spec("same_band", SameBand, SameBand.kind),
        _spec("inside_which_region", InsideWhichRegion, InsideWhichRegion.kind),
    ]
)


class _FactoryView(Mapping[str, Callable[..., Dataset]]):
    """Read-only name -> factory view of :data:`TASK_REGISTRY` (the older interface)."""

    def __getitem__(self, name: str) -> Callable[..., Dataset]:
        return TASK_REGISTRY[name].factory

    def __iter__(self) -> Iterator[str]:
        return iter(TASK_REGISTRY)

    def __len__(self) -> int:
        return len(TASK_REGISTRY)

    def __repr__(self) -> str:
        return f"HOLISTIC_TASKS({list(TASK_REGISTRY)})"


#: The benchmark tasks by name: a callable taking ``num_samples``, ``split``, ``seed`` and the
#: task's own keyword arguments. A view of :data:`TASK_REGISTRY`, which also gives each task's kind.
HOLISTIC_TASKS: Mapping[str, Callable[..., Dataset]] = _FactoryView()


def list_tasks(kind: Optional[str] = None) -> list[str]:
    """Names of the registered tasks in registry order, all or only those of ``kind``.

    Example:
        >>> list_tasks("statistic")[:2]
        ['cue_any_side', 'inside_outside']
    """
    if kind is not None:
        check_choice("kind", kind, TASK_KINDS)
    return [n for n, spec in TASK_REGISTRY.items() if kind is None or spec.kind == kind]


def task_kind(name: str) -> str:
    """The kind of task ``name``: ``"statistic"`` or ``"relational"``.

    Example:
        >>> task_kind("nearer_marker")
        'relational'
    """
    return _lookup(name).kind


def _lookup(name: object) -> TaskSpec:
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__} {name!r}")
    if name not in TASK_REGISTRY:
        raise ValueError(f"unknown task {name!r}; expected one of {tuple(TASK_REGISTRY)}")
    return TASK_REGISTRY[name]


def make_task(name: str, num_samples: int = 1000, split: str = "train", seed: int = 0, **kwargs: Any) -> Dataset:
    """One split of a registered task by name (see :data:`TASK_REGISTRY`).

    Example:
        >>> ds = make_task("inside_outside", 4, image_size=48, seed=1)
        >>> ds[0]["image"].shape, ds[0]["mask"].shape
        (torch.Size([1, 48, 48]), torch.Size([1, 48, 48]))
    """
    return _lookup(name).factory(num_samples=num_samples, split=split, seed=seed, **kwargs)


def task_splits(
    name: str, num_train: int = 1000, num_val: int = 200, num_test: int = 200, seed: int = 0, **kwargs: Any
) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets of a registered task (independent random streams).

    Example:
        >>> train, val, test = task_splits("same_band", 2, 2, 2, seed=0)
        >>> train[0]["id"], test[0]["id"]
        ('same_band-train-0-0', 'same_band-test-0-0')
    """
    for bad in ("split", "num_samples"):
        if bad in kwargs:
            raise TypeError(f"task_splits sets {bad!r} itself; do not pass it")
    return (
        make_task(name, num_train, "train", seed, **kwargs),
        make_task(name, num_val, "val", seed, **kwargs),
        make_task(name, num_test, "test", seed, **kwargs),
    )
