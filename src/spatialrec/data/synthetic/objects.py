"""Tasks about sets of objects: :class:`SameShapeAsReference` (the shape of one bright object)
and :class:`MinorityKind` (the rarer of two kinds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np

from ...checks import check_int
from ._draw import SHAPE_KINDS, _check_range, _extent, _place, _shape_mask
from .base import TaskSettings, _SyntheticTask

if TYPE_CHECKING:  # annotations only: no runtime dependency
    from typing_extensions import Unpack


@dataclass(frozen=True)
class ObjectsLayout:
    """``objects[k] = (centre_row, centre_col, radius, kind_index)``; ``reference`` is the index of
    the reference object in ``objects`` (``None`` when the task has none)."""

    objects: tuple[tuple[float, float, float, int], ...]
    reference: Optional[int]
    noise_seed: int


def _draw_objects(task: _SyntheticTask, kinds: Sequence[str], layout: ObjectsLayout, levels: Callable[[int], float]) -> tuple[np.ndarray, list[np.ndarray]]:
    rows, cols = task._grid()
    image = np.zeros(task.image_size)
    masks = []
    for k, (cy, cx, r, kind) in enumerate(layout.objects):
        m = _shape_mask(kinds[kind], rows, cols, cy, cx, r)
        image[m] = levels(k)
        masks.append(m)
    return image, masks


class SameShapeAsReference(_SyntheticTask):
    """Relational: segment the objects that have the same shape as a reference object placed anywhere.

    One reference object (brighter: grey level 1.0) and ``num_objects`` others (grey level 0.6),
    each of a random kind among ``num_kinds`` shapes (disc, square, ring, diamond) and a random
    size. The mask is every non-reference object of the reference's kind (at least one; at least
    one object of another kind too).

    Which dependency it tests: a comparison between two far-apart regions (symmetry, "the other
    kidney", a lesion like this one). Why a local model cannot solve it: whether an object is a
    target depends only on the reference's shape, and the reference is at least ``min_distance``
    of the image (14 px at the default 48 x 48, bounding circle to bounding circle) from every
    other object, at a random place; marking every object gives Dice about ``2k / (k + n)`` for
    ``k`` matches among ``n``, guessing a kind about ``1 / num_kinds`` right.

    Kind: **statistic**. The answer is the shape of the one bright object, and that is a global
    statistic: the bounding-box fill of the bright pixels (or a pooled "bright disc / bright
    square" feature) names the target kind wherever the reference is. A global pooling path that
    gates local shape detectors with it can solve the task without relating positions.

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_objects: objects besides the reference, >= 2 (difficulty knob); default 4.
        num_kinds: shape kinds in use, 2-4; default 3 (disc, square, ring).
        radius_range: object radius as fractions of ``min(H, W)``; default ``(0.08, 0.1)``.
        min_distance: minimal gap between the reference and any object as a fraction of
            ``min(H, W)``; default 0.3.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.
    """

    task_name = "same_shape"
    kind = "statistic"
    _task_code = 3

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_objects: int = 4,
        num_kinds: int = 3,
        radius_range: tuple[float, float] = (0.08, 0.1),
        min_distance: float = 0.3,
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
        self.num_objects = check_int("num_objects", num_objects, 2, 12)
        self.num_kinds = check_int("num_kinds", num_kinds, 2, len(SHAPE_KINDS))
        self.kinds = SHAPE_KINDS[: self.num_kinds]
        self.radius_range = _check_range("radius_range", radius_range, 0.02, 0.2)
        if not 0.0 <= float(min_distance) <= 0.8:
            raise ValueError(f"min_distance must be in [0, 0.8], got {min_distance!r}")
        self.min_distance = float(min_distance)

    def layout(self, index: int) -> ObjectsLayout:
        """The random choices of sample ``index``; the reference is ``objects[0]``."""
        rng = self._rng(index)
        base = min(self.image_size)
        n = 1 + self.num_objects
        ref_kind = int(rng.integers(self.num_kinds))
        # At least one match and one non-match: draw the others until both occur.
        while True:
            others = [int(k) for k in rng.integers(self.num_kinds, size=self.num_objects)]
            if ref_kind in others and any(k != ref_kind for k in others):
                break
        kinds = [ref_kind] + others
        radii = [float(rng.uniform(*self.radius_range) * base) for _ in range(n)]
        extents = [_extent(self.kinds[k], r) for k, r in zip(kinds, radii)]
        far = self.min_distance * base
        centres = _place(rng, extents, self.image_size, gap=lambda i, j: far if 0 in (i, j) else 2.0)
        objects = tuple((c[0], c[1], r, k) for c, r, k in zip(centres, radii, kinds))
        return ObjectsLayout(objects, 0, int(rng.integers(2**31 - 1)))

    def render(self, layout: ObjectsLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        ref = layout.reference
        assert ref is not None  # layouts of this task always name their reference object
        image, masks = _draw_objects(self, self.kinds, layout, lambda k: 1.0 if k == ref else 0.6)
        ref_kind = layout.objects[ref][3]
        mask = np.zeros(self.image_size, dtype=bool)
        for k, (m, obj) in enumerate(zip(masks, layout.objects)):
            if k != ref and obj[3] == ref_kind:
                mask |= m
        return self._finish(image, layout.noise_seed), mask


class MinorityKind(_SyntheticTask):
    """Counting: segment the objects of the kind that is rarer in the image.

    ``num_objects`` (odd) discs and squares of one grey level, ``(n - 1) / 2`` of one kind and
    ``(n + 1) / 2`` of the other (which kind is rarer is drawn at random): the counts always
    differ by one, so the label hangs on every single object. The mask is the rarer kind.

    Which dependency it tests: aggregation over the whole image (counting, comparing totals, as
    in "the smaller of the two"). Why a local model cannot solve it: an object's label depends
    on the kinds of all the others, spread over the image (on average a third of the image side
    apart); changing one far-away object flips every label. Marking every object gives Dice
    ``2 (n-1)/2 / ((n-1)/2 + n)`` (0.57 for 5 objects), guessing a kind 0.5.

    Kind: **statistic**. The answer is a global aggregate, the count of each kind, i.e. the
    average over the image of a local disc-or-square feature: a global pooling path can read it
    off, and no spatial relation between the objects matters.

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_objects: odd number of objects, >= 3 (difficulty knob); default 5.
        radius_range: object radius as fractions of ``min(H, W)``; default ``(0.07, 0.09)``.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.
    """

    task_name = "minority_kind"
    kind = "statistic"
    _task_code = 4
    kinds = ("disc", "square")

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_objects: int = 5,
        radius_range: tuple[float, float] = (0.07, 0.09),
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
        self.num_objects = check_int("num_objects", num_objects, 3, 15)
        if self.num_objects % 2 == 0:
            raise ValueError(f"num_objects must be odd (so one kind is always rarer), got {num_objects!r}")
        self.radius_range = _check_range("radius_range", radius_range, 0.02, 0.2)

    def layout(self, index: int) -> ObjectsLayout:
        """The random choices of sample ``index``."""
        rng = self._rng(index)
        n = self.num_objects
        rare = int(rng.integers(2))
        kinds = [rare] * ((n - 1) // 2) + [1 - rare] * ((n + 1) // 2)
        kinds = [kinds[i] for i in rng.permutation(n)]
        radii = [float(rng.uniform(*self.radius_range) * min(self.image_size)) for _ in range(n)]
        extents = [_extent(self.kinds[k], r) for k, r in zip(kinds, radii)]
        centres = _place(rng, extents, self.image_size, gap=2.0)
        objects = tuple((c[0], c[1], r, k) for c, r, k in zip(centres, radii, kinds))
        return ObjectsLayout(objects, None, int(rng.integers(2**31 - 1)))

    def render(self, layout: ObjectsLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        image, masks = _draw_objects(self, self.kinds, layout, lambda k: 0.8)
        counts = [sum(1 for o in layout.objects if o[3] == k) for k in (0, 1)]
        rare = int(np.argmin(counts)) if counts[0] != counts[1] else -1
        mask = np.zeros(self.image_size, dtype=bool)
        for m, obj in zip(masks, layout.objects):
            if obj[3] == rare:
                mask |= m
        return self._finish(image, layout.noise_seed), mask

