"""The cue task, :class:`SyntheticLongRange` (registered as ``cue_any_side`` with the cue on any
border): segment the object whose kind a far-away border stripe names.

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
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ...checks import check_int
from ._draw import SHAPE_KINDS, _extent, _shape_mask
from .base import TaskSettings, Transform, _SyntheticTask

if TYPE_CHECKING:  # annotations only: no runtime dependency
    from typing_extensions import Unpack

_BORDERS = ("top", "bottom", "left", "right")
# Smaller objects when more kinds must share the half of the image away from the cue.
_DEFAULT_RADIUS = {2: (0.08, 0.12), 3: (0.065, 0.095), 4: (0.05, 0.075)}


@dataclass(frozen=True)
class SyntheticLayout:
    """Everything that defines one sample (in the final image's coordinates).

    ``shapes[k] = (centre_row, centre_col, radius)`` for kind ``k``; ``target_kind`` indexes it.
    """

    border: str
    target_kind: int
    shapes: tuple[tuple[float, float, float], ...]
    noise_seed: int



class SyntheticLongRange(_SyntheticTask):
    """Synthetic long-range segmentation: segment the object whose kind a far-away border cue names.

    Kind: **statistic**. The cue stripe takes the grey level of the target kind, so the image's
    histogram (and its mean) changes with the answer: a global average of the image, or of any
    feature that sees the stripe, names the target kind, and a global pooling path can solve it.
    It tests whether a model brings a far cue in at all, not where things are relative to it.

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

    task_name = "synthetic"  # the id prefix of its items
    kind = "statistic"

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
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
        if cue_position not in ("fixed", "random"):
            raise ValueError(f"cue_position must be 'fixed' or 'random', got {cue_position!r}")
        if cue_border not in _BORDERS:
            raise ValueError(f"cue_border must be one of {_BORDERS}, got {cue_border!r}")
        borders = tuple(borders)
        if not borders or any(b not in _BORDERS for b in borders):
            raise ValueError(f"borders must be a non-empty subset of {_BORDERS}, got {borders!r}")
        num_kinds = check_int("num_kinds", num_kinds, 2, len(SHAPE_KINDS))
        if radius_range is None:
            radius_range = _DEFAULT_RADIUS[num_kinds] if num_kinds in _DEFAULT_RADIUS else (0.08, 0.12)
        lo, hi = (float(v) for v in radius_range)
        if not 0.02 <= lo <= hi <= 0.2:
            raise ValueError(f"radius_range must satisfy 0.02 <= low <= high <= 0.2, got {radius_range!r}")
        if cue_width is not None:
            cue_width = check_int("cue_width", cue_width, 1)
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
        rng = self._rng(index)
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

    def _image_and_mask(self, layout: SyntheticLayout) -> tuple[np.ndarray, np.ndarray]:
        image, mask, _ = self.render(layout)
        return image, mask

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

