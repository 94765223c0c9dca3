"""Synthetic segmentation tasks that need long-range context.

:class:`SyntheticLongRange` (the cue task, below) and four more tasks of the long-range benchmark
(``benchmarks/bench_holistic.py``, ``docs/holistic.md``): :class:`InsideOutside`,
:class:`ConnectedToMarker`, :class:`SameShapeAsReference` and :class:`MinorityKind`. Every task
yields the same items (``{"image": (1, H, W), "mask": (1, H, W) 0/1, "id": str}``), is generated
on the fly from ``numpy.random.default_rng([seed, split_code, index, ...])`` and exposes
``layout(index)`` (the random choices) and ``render(layout)`` (the drawing), so a test can change
only the far-away cue of a sample and watch the label change. :func:`make_task` and
:func:`task_splits` build any of them by name (:data:`HOLISTIC_TASKS`).

The cue task

Every image shows one object of each of ``num_kinds`` kinds (disc, square, ring, diamond; each
kind has its own shape *and* grey level, so a few pixels suffice to tell the kinds apart) and a
cue: a stripe along one whole border whose grey level equals the level of the kind to segment.
The mask is the object of that kind. The target kind is drawn uniformly and independently of
the objects' sizes and positions, and every object lies at least half the image away from the
cue, so a network that only sees a neighbourhood of a pixel smaller than that cannot tell whether
the object under it is the target: its best strategy is to mark every object (Dice about
``2 / (num_kinds + 1)``, 0.67 for two kinds) or one kind at random (0.5 on average). A network whose
receptive field reaches the cue (an SDN sweeping away from the cue's border, a transformer, a very
deep CNN) can solve it exactly.

With ``cue_position="fixed"`` the cue is on ``cue_border`` (``"top"`` by default: upstream of the
downward sweep of spatialrec's default ``("right", "down")`` SDN; ``"left"`` is upstream of the
rightward sweep). With ``"random"`` each sample draws its border from ``borders``; a cue on the
bottom or right border is downstream of a right-then-down SDN, which shows why the sweep
directions matter.

Generation is on the fly and deterministic: sample ``i`` of ``split`` with ``seed`` comes from
``numpy.random.default_rng([seed, split_code, i])``, so the same arguments give the same images
in any process, and the three splits of one seed never share a random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_int

__all__ = [
    "ConnectedToMarker",
    "HOLISTIC_TASKS",
    "InsideOutside",
    "MinorityKind",
    "SHAPE_KINDS",
    "SameShapeAsReference",
    "SyntheticLongRange",
    "make_task",
    "synthetic_splits",
    "task_splits",
]

SHAPE_KINDS = ("disc", "square", "ring", "diamond")
_BORDERS = ("top", "bottom", "left", "right")
# Smaller objects when more kinds must share the half of the image away from the cue.
_DEFAULT_RADIUS = {2: (0.08, 0.12), 3: (0.065, 0.095), 4: (0.05, 0.075)}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SyntheticLayout:
    """Everything that defines one sample (in the final image's coordinates).

    ``shapes[k] = (centre_row, centre_col, radius)`` for kind ``k``; ``target_kind`` indexes it.
    """

    border: str
    target_kind: int
    shapes: tuple[tuple[float, float, float], ...]
    noise_seed: int


def _size_pair(image_size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise TypeError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        h = w = image_size
    else:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise TypeError(f"image_size must be an int or (H, W), got {image_size!r}") from None
    if h < 24 or w < 24:
        raise ValueError(f"image_size must be at least 24 x 24 (room for a cue and far-away objects), got {(h, w)}")
    return h, w


def _shape_mask(kind: str, rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = rows - cy, cols - cx
    # Sizes chosen so the four kinds cover about the same area (~3 r^2): the area is no clue.
    if kind == "disc":
        return dy * dy + dx * dx <= r * r
    if kind == "square":
        return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
    if kind == "ring":
        d2 = dy * dy + dx * dx
        return (d2 <= (1.15 * r) ** 2) & (d2 >= (0.55 * r) ** 2)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1.25 * r
    raise ValueError(f"unknown shape kind {kind!r}")


def _extent(kind: str, r: float) -> float:
    """Half-width of the kind's bounding box for radius ``r``."""
    return {"disc": r, "square": 0.85 * r, "ring": 1.15 * r, "diamond": 1.25 * r}[kind]


class _SyntheticBase(Dataset):
    """The settings every synthetic data set takes, checked, and its length. Not public."""

    def __init__(
        self,
        num_samples: int,
        image_size: Union[int, Sequence[int]],
        noise_std: float,
        split: str,
        seed: int,
        transform: Optional[Transform],
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (image, mask) -> (image, mask), got {type(transform).__name__}")
        self.num_samples = num_samples
        self.image_size = _size_pair(image_size)
        self.noise_std = float(noise_std)
        self.split = split
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples


class SyntheticLongRange(_SyntheticBase):
    """Synthetic long-range segmentation: segment the object whose kind a far-away border cue names.

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24 x 24; default 64.
        cue_position: ``"fixed"`` (cue on ``cue_border``) or ``"random"`` (per sample, one of
            ``borders``).
        cue_border: border of the fixed cue: ``"top"`` (default), ``"bottom"``, ``"left"``, ``"right"``.
        borders: borders drawn from with ``cue_position="random"``; default all four.
        num_kinds: object kinds per image, 2-4 (disc, square, ring, diamond); default 2.
        cue_width: thickness of the cue stripe in pixels; default ``max(2, round(extent / 20))``
            where ``extent`` is the image size across the cue's border.
        radius_range: object radius as fractions of ``min(H, W)``; default ``(0.08, 0.12)`` for 2
            kinds, ``(0.065, 0.095)`` for 3, ``(0.05, 0.075)`` for 4.
        noise_std: standard deviation of the Gaussian pixel noise; default 0.1.
        split: ``"train"``, ``"val"`` or ``"test"``: an independent random stream per split.
        seed: integer seed.
        transform: optional callable ``(image, mask) -> (image, mask)`` applied to each sample.

    Attributes:
        in_channels: 1. num_classes: 1. kinds: the kind names in use. levels: their grey levels.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (1, H, W) 0/1, "id": str}``; the image is
    0 in the background, ``levels[k]`` on objects of kind ``k`` and on the cue, plus noise.

    Example:
        >>> train, val, test = synthetic_splits(num_train=512, num_val=64, num_test=64, seed=0)
        >>> train[0]["image"].shape, train.num_classes
        (torch.Size([1, 64, 64]), 1)
    """

    in_channels = 1
    num_classes = 1

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 64,
        cue_position: str = "fixed",
        cue_border: str = "top",
        borders: Sequence[str] = _BORDERS,
        num_kinds: int = 2,
        cue_width: Optional[int] = None,
        radius_range: Optional[tuple[float, float]] = None,
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(num_samples, image_size, noise_std, split, seed, transform)
        if cue_position not in ("fixed", "random"):
            raise ValueError(f"cue_position must be 'fixed' or 'random', got {cue_position!r}")
        if cue_border not in _BORDERS:
            raise ValueError(f"cue_border must be one of {_BORDERS}, got {cue_border!r}")
        borders = tuple(borders)
        if not borders or any(b not in _BORDERS for b in borders):
            raise ValueError(f"borders must be a non-empty subset of {_BORDERS}, got {borders!r}")
        if isinstance(num_kinds, bool) or not isinstance(num_kinds, int) or not 2 <= num_kinds <= len(SHAPE_KINDS):
            raise ValueError(f"num_kinds must be an int in [2, {len(SHAPE_KINDS)}], got {num_kinds!r}")
        if radius_range is None:
            radius_range = _DEFAULT_RADIUS[num_kinds] if num_kinds in _DEFAULT_RADIUS else (0.08, 0.12)
        lo, hi = (float(v) for v in radius_range)
        if not 0.02 <= lo <= hi <= 0.2:
            raise ValueError(f"radius_range must satisfy 0.02 <= low <= high <= 0.2, got {radius_range!r}")
        if cue_width is not None and (isinstance(cue_width, bool) or not isinstance(cue_width, int) or cue_width < 1):
            raise ValueError(f"cue_width must be None or an int >= 1, got {cue_width!r}")
        self.cue_position = cue_position
        self.cue_border = cue_border
        self.borders = borders
        self.num_kinds = num_kinds
        self.kinds = SHAPE_KINDS[:num_kinds]
        self.levels = tuple(float(v) for v in np.linspace(0.4, 1.0, num_kinds))
        self._cue_width = cue_width
        self.radius_range = (lo, hi)

    def cue_width(self, border: str) -> int:
        """Stripe thickness (pixels) for a cue on ``border``."""
        if self._cue_width is not None:
            return self._cue_width
        extent = self.image_size[0] if border in ("top", "bottom") else self.image_size[1]
        return max(2, round(extent / 20))

    def _canvas(self, border: str) -> tuple[int, int]:
        """Canvas (rows, cols) on which the cue is on the top; transposed for left/right cues."""
        h, w = self.image_size
        return (h, w) if border in ("top", "bottom") else (w, h)

    def layout(self, index: int) -> SyntheticLayout:
        """The random choices of sample ``index`` (deterministic in seed, split and index)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        border = self.cue_border if self.cue_position == "fixed" else self.borders[int(rng.integers(len(self.borders)))]
        target = int(rng.integers(self.num_kinds))
        ch, cw = self._canvas(border)
        t = self.cue_width(border)
        # First canvas row every object must stay below: distance to the cue >= ceil(extent / 2).
        row0 = t - 1 + math.ceil(ch / 2)
        lo, hi = self.radius_range
        base = min(self.image_size)
        placed: list[tuple[float, float, float, float]] = []
        for _attempt in range(50):
            placed = []
            for kind in self.kinds:
                for _try in range(100):
                    r = float(rng.uniform(lo, hi) * base)
                    e = _extent(kind, r)
                    y_min, y_max = row0 + e, ch - 1 - e
                    x_min, x_max = e, cw - 1 - e
                    if y_min > y_max or x_min > x_max:
                        raise ValueError(
                            f"image_size {self.image_size} is too small for objects of radius up to {hi} x {base} "
                            f"px in the half away from the cue; use a larger image or a smaller radius_range"
                        )
                    cy, cx = float(rng.uniform(y_min, y_max)), float(rng.uniform(x_min, x_max))
                    # Bounding boxes at least 2 px apart: objects never touch, each is a clean instance.
                    if all(abs(cy - b[0]) > e + b[3] + 2 or abs(cx - b[1]) > e + b[3] + 2 for b in placed):
                        placed.append((cy, cx, r, e))
                        break
                else:
                    break
            if len(placed) == self.num_kinds:
                break
        else:
            raise ValueError(
                f"could not place {self.num_kinds} non-overlapping objects in image_size {self.image_size} "
                f"(sample {index}); use a larger image, fewer kinds or a smaller radius_range"
            )
        shapes = tuple(self._to_image_coords(border, cy, cx, ch, cw) + (r,) for cy, cx, r, _ in placed)
        return SyntheticLayout(border, target, shapes, int(rng.integers(2**31 - 1)))

    @staticmethod
    def _to_image_coords(border: str, cy: float, cx: float, ch: int, cw: int) -> tuple[float, float]:
        if border == "top":
            return cy, cx
        if border == "bottom":
            return ch - 1 - cy, cx
        if border == "left":
            return cx, cy
        return cx, ch - 1 - cy  # right: canvas rows run from the right border leftwards

    def cue_mask(self, border: str) -> np.ndarray:
        """bool ``(H, W)``: the cue stripe's pixels for a cue on ``border``."""
        h, w = self.image_size
        t = self.cue_width(border)
        m = np.zeros((h, w), dtype=bool)
        if border == "top":
            m[:t] = True
        elif border == "bottom":
            m[h - t :] = True
        elif border == "left":
            m[:, :t] = True
        else:
            m[:, w - t :] = True
        return m

    def render(self, layout: SyntheticLayout) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Draw a layout: image float32 ``(H, W)``, target mask bool ``(H, W)``, one mask per kind."""
        h, w = self.image_size
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
        image = np.zeros((h, w), dtype=np.float64)
        kind_masks = []
        for k, (kind, (cy, cx, r)) in enumerate(zip(self.kinds, layout.shapes)):
            m = _shape_mask(kind, rows, cols, cy, cx, r)
            image[m] = self.levels[k]
            kind_masks.append(m)
        image[self.cue_mask(layout.border)] = self.levels[layout.target_kind]
        if self.noise_std > 0:
            image += np.random.default_rng(layout.noise_seed).normal(0.0, self.noise_std, size=(h, w))
        return image.astype(np.float32), kind_masks[layout.target_kind].copy(), kind_masks

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.num_samples
        layout = self.layout(index)
        image, mask, _ = self.render(layout)
        img_t = torch.from_numpy(image)[None]
        mask_t = torch.from_numpy(mask.astype(np.float32))[None]
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        return {"image": img_t, "mask": mask_t, "id": f"synthetic-{self.split}-{self.seed}-{index}"}

    def __repr__(self) -> str:
        return (
            f"SyntheticLongRange(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"cue_position={self.cue_position!r}, cue_border={self.cue_border!r}, num_kinds={self.num_kinds}, "
            f"split={self.split!r}, seed={self.seed})"
        )


def synthetic_splits(
    num_train: int = 1000,
    num_val: int = 200,
    num_test: int = 200,
    seed: int = 0,
    train_transform: Optional[Transform] = None,
    **kwargs: object,
) -> tuple[SyntheticLongRange, SyntheticLongRange, SyntheticLongRange]:
    """Train, validation and test sets of :class:`SyntheticLongRange` from one seed.

    Args:
        num_train, num_val, num_test: sizes of the three sets.
        seed: the seed; each split has its own random stream, so no sample is shared.
        train_transform: augmentation for the training set only (validation and test get none).
        **kwargs: any other :class:`SyntheticLongRange` argument (image_size, cue_position, ...).

    Returns:
        ``(train, val, test)``.
    """
    for bad in ("split", "num_samples", "transform"):
        if bad in kwargs:
            raise TypeError(f"synthetic_splits sets {bad!r} itself; do not pass it")
    return (
        SyntheticLongRange(num_train, split="train", seed=seed, transform=train_transform, **kwargs),  # type: ignore[arg-type]
        SyntheticLongRange(num_val, split="val", seed=seed, **kwargs),  # type: ignore[arg-type]
        SyntheticLongRange(num_test, split="test", seed=seed, **kwargs),  # type: ignore[arg-type]
    )


# ============================================================================ the other tasks
#
# Shared machinery: argument checks, the per-sample random stream, rejection placement of
# non-touching objects, and __getitem__. Each task only says how to draw a layout and render it.

_TASK_CODES = {"inside_outside": 1, "connected_to_marker": 2, "same_shape": 3, "minority_kind": 4}


def _check_range(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in cast(Iterable[Any], value))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


class _SyntheticTask(_SyntheticBase):
    """Base of the benchmark tasks: random streams, ``__getitem__``. Not public."""

    in_channels = 1
    num_classes = 1
    task_name = ""

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index, _TASK_CODES[self.task_name]])

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.image_size
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
        return rows, cols

    def _finish(self, image: np.ndarray, noise_seed: int) -> np.ndarray:
        if self.noise_std > 0:
            image = image + np.random.default_rng(noise_seed).normal(0.0, self.noise_std, size=image.shape)
        return image.astype(np.float32)

    def layout(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, layout) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.num_samples
        image, mask = self.render(self.layout(index))
        img_t = torch.from_numpy(image)[None]
        mask_t = torch.from_numpy(mask.astype(np.float32))[None]
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        return {"image": img_t, "mask": mask_t, "id": f"{self.task_name}-{self.split}-{self.seed}-{index}"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, split={self.split!r}, seed={self.seed})"


def _place(
    rng: np.random.Generator,
    extents: Sequence[float],
    size: tuple[int, int],
    gap: Union[float, Callable[[int, int], float]],
    what: str = "objects",
) -> list[tuple[float, float]]:
    """Centres ``(row, col)`` for objects of the given half-extents, inside the image, bounding
    circles of objects ``i`` and ``j`` at least ``gap`` (or ``gap(i, j)``) px apart."""
    h, w = size
    for _attempt in range(200):
        centres: list[tuple[float, float]] = []
        for e in extents:
            if 2 * e >= min(h, w) - 1:
                raise ValueError(f"image_size {size} is too small for {what} of half-extent {e:.1f} px")
            for _try in range(100):
                c = (float(rng.uniform(e, h - 1 - e)), float(rng.uniform(e, w - 1 - e)))
                i = len(centres)
                if all(
                    math.hypot(c[0] - b[0], c[1] - b[1]) >= e + extents[j] + (gap(i, j) if callable(gap) else gap)
                    for j, b in enumerate(centres)
                ):
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == len(extents):
            return centres
    raise ValueError(
        f"could not place {len(extents)} {what} in image_size {size}; use a larger image or fewer/smaller {what}"
    )


# ---------------------------------------------------------------------------- inside / outside


@dataclass(frozen=True)
class ContourLayout:
    """``contours[k] = (centre_row, centre_col, radius, amplitudes, phases, gap_angle)``: a closed
    curve ``r(t) = radius * (1 + sum_m a_m cos(m t + p_m))`` (harmonics ``m = 2, 3, 4``) with a
    gap around ``gap_angle``, except contour ``closed``, which is drawn without its gap."""

    closed: int
    contours: tuple[tuple[float, float, float, tuple[float, ...], tuple[float, ...], float], ...]
    noise_seed: int


class InsideOutside(_SyntheticTask):
    """Inside/outside: segment the region enclosed by the one *closed* noisy contour.

    Each image shows ``1 + num_open`` wobbly closed curves (star-shaped, random harmonics) of the
    same grey level, which may overlap; all but one have a gap of ``gap`` pixels at a random place. The mask is the
    region the unbroken curve encloses (the curve included). The open curves enclose nothing.

    Which dependency it tests: whether a pixel is inside depends on the *whole* boundary around it
    (an enclosure is a global, topological property). Why a local model cannot solve it: a closed
    and an open contour look the same everywhere except at the gap, a few pixels wide at a random
    angle; a pixel on the far side of a contour is up to a diameter (``2 * radius``, 16-22 px at
    the default 48 x 48) away from the gap, and an interior pixel is a radius away from every
    curve. A network whose receptive field does not span a whole contour can only guess which of
    the look-alike regions to fill (Dice about ``2 / (2 + num_open)`` when it fills them all).

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_open: distractor contours with a gap (difficulty knob); default 1.
        radius_range: mean contour radius as fractions of ``min(H, W)``; default ``(0.17, 0.23)``.
        gap: gap length in pixels; default 5.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (1, H, W) 0/1, "id": str}``; curves at
    grey level 1, background 0, plus Gaussian noise.
    """

    task_name = "inside_outside"

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_open: int = 1,
        radius_range: tuple[float, float] = (0.17, 0.23),
        gap: float = 5.0,
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(num_samples, image_size, noise_std, split, seed, transform)
        self.num_open = check_int("num_open", num_open, 0)
        self.radius_range = _check_range("radius_range", radius_range, 0.05, 0.45)
        if not 1.0 <= float(gap) <= 20.0:
            raise ValueError(f"gap must be a length in pixels in [1, 20], got {gap!r}")
        self.gap = float(gap)

    def layout(self, index: int) -> ContourLayout:
        """The random choices of sample ``index`` (deterministic in seed, split and index)."""
        rng = self._rng(index)
        n = 1 + self.num_open
        base = min(self.image_size)
        radii = [float(rng.uniform(*self.radius_range) * base) for _ in range(n)]
        amps = [tuple(float(a) for a in rng.uniform(0.0, 0.08, size=3)) for _ in range(n)]
        phases = [tuple(float(p) for p in rng.uniform(0, 2 * math.pi, size=3)) for _ in range(n)]
        extents = [r * (1 + sum(a)) + 1.5 for r, a in zip(radii, amps)]
        # Contours may overlap (by up to 60% of the smaller one's extent): room for big ones, and a
        # crossing curve is one more thing a local model must not mistake for an enclosure.
        centres = _place(rng, extents, self.image_size, gap=-0.6 * min(extents), what="contours")
        gaps = [float(rng.uniform(0, 2 * math.pi)) for _ in range(n)]
        closed = int(rng.integers(n))
        contours = tuple((c[0], c[1], r, a, p, g) for c, r, a, p, g in zip(centres, radii, amps, phases, gaps))
        return ContourLayout(closed, contours, int(rng.integers(2**31 - 1)))

    def render(self, layout: ContourLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        rows, cols = self._grid()
        image = np.zeros(self.image_size)
        mask = np.zeros(self.image_size, dtype=bool)
        for k, (cy, cx, r, amps, phases, gap_angle) in enumerate(layout.contours):
            dy, dx = rows - cy, cols - cx
            dist, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
            radius = r * (1 + sum(a * np.cos(m * theta + p) for m, a, p in zip((2, 3, 4), amps, phases)))
            curve = np.abs(dist - radius) <= 0.75
            if k != layout.closed:
                off = np.abs((theta - gap_angle + math.pi) % (2 * math.pi) - math.pi)
                curve &= off * r > self.gap / 2  # arc length from the gap's centre
            else:
                mask |= dist <= radius + 0.75
            image[curve] = 1.0
        return self._finish(image, layout.noise_seed), mask


# ---------------------------------------------------------------------------- connected to marker


@dataclass(frozen=True)
class CurvesLayout:
    """``curves[k]``: control points ``(p0, p1, p2)`` (each ``(row, col)``) of a quadratic Bézier
    curve; the marker dot sits on ``p0`` of curve ``target``."""

    target: int
    curves: tuple[tuple[tuple[float, float], tuple[float, float], tuple[float, float]], ...]
    noise_seed: int


def _bezier(curve: tuple[tuple[float, float], ...], n: int = 256) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in curve)
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _near_polyline(size: tuple[int, int], pts: np.ndarray, radius: float) -> np.ndarray:
    """bool ``(H, W)``: pixels within ``radius`` of any of the (dense) points ``pts: (N, 2)``."""
    h, w = size
    reach = int(math.ceil(radius)) + 1
    offsets = np.arange(-reach, reach + 1)
    base = np.floor(pts).astype(np.int64)
    cand_r = base[:, 0, None, None] + offsets[None, :, None]  # (N, K, 1)
    cand_c = base[:, 1, None, None] + offsets[None, None, :]  # (N, 1, K)
    d2 = (cand_r - pts[:, 0, None, None]) ** 2 + (cand_c - pts[:, 1, None, None]) ** 2
    cand_r, cand_c = np.broadcast_arrays(cand_r, cand_c)
    keep = (d2 <= radius * radius) & (cand_r >= 0) & (cand_r < h) & (cand_c >= 0) & (cand_c < w)
    out = np.zeros(size, dtype=bool)
    out[cand_r[keep], cand_c[keep]] = True
    return out


class ConnectedToMarker(_SyntheticTask):
    """Connected-to-marker: among several thin curves, segment the one that touches the marker dot.

    ``num_curves`` smooth curves (quadratic Bézier, ends at least ``min_length`` of the image apart)
    of the same grey level cross each other at random; a brighter dot sits on one end of one of
    them. The mask is that curve, all of it.

    Which dependency it tests: connectivity along a thin structure (a vessel, an airway, a
    catheter traced from where it enters), i.e. propagation that must follow the curve across
    the image and through crossings. Why a local model cannot solve it: away from the dot all
    curves look alike; the far end of the target curve is at least ``min_length * size`` pixels
    (34 at the default 48 x 48) from the dot, so a pixel there must be told by pixels that far
    away whether its curve is the marked one. Marking all curves gives Dice about
    ``2 / (1 + num_curves)``.

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_curves: curves per image, the target plus distractors (difficulty knob); default 3.
        min_length: minimal distance between a curve's two ends as a fraction of ``min(H, W)``;
            default 0.7.
        width: half-width of a curve in pixels; default 1.0.
        marker_radius: radius of the dot in pixels; default 2.0.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.

    Items: as :class:`InsideOutside`; curves at grey level 0.6, the dot at 1.0.
    """

    task_name = "connected_to_marker"

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_curves: int = 3,
        min_length: float = 0.7,
        width: float = 1.0,
        marker_radius: float = 2.0,
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(num_samples, image_size, noise_std, split, seed, transform)
        self.num_curves = check_int("num_curves", num_curves, 1, 8)
        if not 0.3 <= float(min_length) <= 1.0:
            raise ValueError(f"min_length must be in [0.3, 1.0], got {min_length!r}")
        if not 0.5 <= float(width) <= 3.0:
            raise ValueError(f"width must be in [0.5, 3] pixels, got {width!r}")
        if not 1.0 <= float(marker_radius) <= 5.0:
            raise ValueError(f"marker_radius must be in [1, 5] pixels, got {marker_radius!r}")
        self.min_length, self.width, self.marker_radius = float(min_length), float(width), float(marker_radius)

    def layout(self, index: int) -> CurvesLayout:
        """The random choices of sample ``index`` (deterministic in seed, split and index)."""
        rng = self._rng(index)
        h, w = self.image_size
        m = self.marker_radius + 1.0
        need = self.min_length * min(h, w)
        for _attempt in range(500):
            curves = []
            for _k in range(self.num_curves):
                for _try in range(200):
                    p0 = (float(rng.uniform(m, h - 1 - m)), float(rng.uniform(m, w - 1 - m)))
                    p2 = (float(rng.uniform(1, h - 2)), float(rng.uniform(1, w - 2)))
                    if math.hypot(p0[0] - p2[0], p0[1] - p2[1]) >= need:
                        break
                else:
                    raise ValueError(f"image_size {self.image_size} cannot hold curves with min_length {self.min_length}")
                p1 = (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1)))
                curves.append((p0, p1, p2))
            pts = [_bezier(c) for c in curves]
            # Every curve's start must be clear of every other curve, so the dot could sit on any
            # of them and touch only that one (the label is never ambiguous).
            clear = self.marker_radius + self.width + 2.0
            if all(
                np.hypot(pts[j][:, 0] - c[0][0], pts[j][:, 1] - c[0][1]).min() >= clear
                for i, c in enumerate(curves)
                for j in range(self.num_curves)
                if j != i
            ):
                break
        else:
            raise ValueError(f"could not place {self.num_curves} curves in image_size {self.image_size}; use fewer curves")
        target = int(rng.integers(self.num_curves))
        return CurvesLayout(target, tuple(curves), int(rng.integers(2**31 - 1)))

    def render(self, layout: CurvesLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        rows, cols = self._grid()
        image = np.zeros(self.image_size)
        mask = np.zeros(self.image_size, dtype=bool)
        for k, c in enumerate(layout.curves):
            on = _near_polyline(self.image_size, _bezier(c), self.width)
            image[on] = 0.6
            if k == layout.target:
                mask = on
        p0 = layout.curves[layout.target][0]
        image[np.hypot(rows - p0[0], cols - p0[1]) <= self.marker_radius] = 1.0
        return self._finish(image, layout.noise_seed), mask


# ---------------------------------------------------------------------------- objects: relational, counting


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

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_objects: int = 4,
        num_kinds: int = 3,
        radius_range: tuple[float, float] = (0.08, 0.1),
        min_distance: float = 0.3,
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(num_samples, image_size, noise_std, split, seed, transform)
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

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_objects: odd number of objects, >= 3 (difficulty knob); default 5.
        radius_range: object radius as fractions of ``min(H, W)``; default ``(0.07, 0.09)``.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.
    """

    task_name = "minority_kind"
    kinds = ("disc", "square")

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_objects: int = 5,
        radius_range: tuple[float, float] = (0.07, 0.09),
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(num_samples, image_size, noise_std, split, seed, transform)
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


# ---------------------------------------------------------------------------- by name


def _cue_any_side(**kwargs: object) -> SyntheticLongRange:
    kwargs.setdefault("image_size", 48)
    return SyntheticLongRange(cue_position="random", **kwargs)  # type: ignore[arg-type]


#: The five tasks of the long-range benchmark, by name: a callable taking ``num_samples``,
#: ``split``, ``seed`` and the task's own keyword arguments. ``cue_any_side`` is
#: :class:`SyntheticLongRange` with ``cue_position="random"`` (the cue on any of the four borders,
#: so a model that sweeps in some directions only fails on some borders); default image 48.
HOLISTIC_TASKS: dict[str, Callable[..., Dataset]] = {
    "cue_any_side": _cue_any_side,
    "inside_outside": InsideOutside,
    "connected_to_marker": ConnectedToMarker,
    "same_shape": SameShapeAsReference,
    "minority_kind": MinorityKind,
}


def make_task(name: str, num_samples: int = 1000, split: str = "train", seed: int = 0, **kwargs: object) -> Dataset:
    """One split of a benchmark task by name (see :data:`HOLISTIC_TASKS`).

    Example:
        >>> ds = make_task("inside_outside", 4, image_size=48, seed=1)
        >>> ds[0]["image"].shape, ds[0]["mask"].shape
        (torch.Size([1, 48, 48]), torch.Size([1, 48, 48]))
    """
    if name not in HOLISTIC_TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {tuple(HOLISTIC_TASKS)}")
    return HOLISTIC_TASKS[name](num_samples=num_samples, split=split, seed=seed, **kwargs)


def task_splits(
    name: str, num_train: int = 1000, num_val: int = 200, num_test: int = 200, seed: int = 0, **kwargs: object
) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets of a benchmark task (independent random streams)."""
    for bad in ("split", "num_samples"):
        if bad in kwargs:
            raise TypeError(f"task_splits sets {bad!r} itself; do not pass it")
    return (
        make_task(name, num_train, "train", seed, **kwargs),
        make_task(name, num_val, "val", seed, **kwargs),
        make_task(name, num_test, "test", seed, **kwargs),
    )
