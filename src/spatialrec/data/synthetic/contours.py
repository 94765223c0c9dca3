"""Tasks about closed contours: :class:`InsideOutside` (which contour is closed) and
:class:`InsideWhichRegion` (which region holds the marker)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ...checks import check_int
from ._draw import SHAPE_KINDS, _bezier, _check_range, _disc, _extent, _integer_centre, _near_polyline, _place, _shape_mask
from .base import Transform, _SyntheticTask


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

    Kind: **statistic** (by the benchmark's strict test, although the dependency is spatial).
    Moving the gap from one contour to another changes the number of curve pixels (the contours
    differ in size, so their gaps hide different pixel counts): the noiseless histogram changes
    with the answer, and a global summary of local features (the size of the contour that has a
    gap) can in principle name the closed contour without relating positions. Only tasks where
    the labels can flip with the histogram exactly unchanged are counted as relational.

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
    kind = "statistic"
    _task_code = 1

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

