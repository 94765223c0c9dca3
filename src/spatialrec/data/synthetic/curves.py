"""Tasks about thin curves: :class:`ConnectedToMarker` (the curve whose end carries the marker dot)
and :class:`ReachableAlongCurve` (the same with round end caps, so that the marker's place changes
no global statistic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from ...checks import check_int
from ._draw import _bezier, _disc, _integer_centre, _near_polyline
from .base import TaskSettings, _SyntheticTask

if TYPE_CHECKING:  # annotations only: no runtime dependency
    from typing_extensions import Unpack


@dataclass(frozen=True)
class CurvesLayout:
    """``curves[k]``: control points ``(p0, p1, p2)`` (each ``(row, col)``) of a quadratic Bézier
    curve; the marker dot sits on ``p0`` of curve ``target``."""

    target: int
    curves: tuple[tuple[tuple[float, float], tuple[float, float], tuple[float, float]], ...]
    noise_seed: int




class ConnectedToMarker(_SyntheticTask):
    """Connected-to-marker: among several thin curves, segment the one that touches the marker dot.

    ``num_curves`` smooth curves (quadratic Bézier, ends at least ``min_length`` of the image apart)
    of the same grey level cross each other at random; a brighter dot sits on one end of one of
    them. The mask is that curve, all of it. (The task of the first benchmark run, unchanged.)

    Kind: **statistic**, strictly: the dot's pixels replace curve pixels that differ in number from
    curve to curve, so moving it to another curve shifts the grey-level histogram a little.
    :class:`ReachableAlongCurve` is the same task with that removed.

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
    kind = "statistic"
    _task_code = 2
    _caps = False  # ReachableAlongCurve: round end caps on every curve

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_curves: int = 3,
        min_length: float = 0.7,
        width: float = 1.0,
        marker_radius: float = 2.0,
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
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
                    if self._caps:  # whole-pixel start: every cap rasterises to the same pixel count
                        p0 = (_integer_centre(p0[0]), _integer_centre(p0[1]))
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
            if self._caps:
                on = on | _disc(rows, cols, *c[0], self.marker_radius)
            image[on] = 0.6
            if k == layout.target:
                mask = on
        # With caps, the marker repaints its curve's cap: whichever cap, the same pixel count turns bright.
        p0 = layout.curves[layout.target][0]
        image[_disc(rows, cols, *p0, self.marker_radius)] = 1.0
        return self._finish(image, layout.noise_seed), mask



class ReachableAlongCurve(ConnectedToMarker):
    """Reachable along a curve: :class:`ConnectedToMarker` with a round end cap on every curve.

    Each curve starts in a cap (a disc of ``marker_radius`` at a whole-pixel centre) and one cap is
    bright: the marker. The mask is the curve of that cap, cap included: the label propagates from
    the marker along the curve it touches, through crossings.

    Kind: **relational**. Moving the marker to another curve's cap swaps the grey levels of two
    caps of the same pixel count, so the noiseless histogram is exactly unchanged while every
    pixel of both curves changes label: no global statistic of the grey levels says which curve
    is marked, only the connection does. Marking all curves gives Dice about ``2 / (1 + num_curves)``.

    Args: as :class:`ConnectedToMarker`.

    Example:
        >>> ds = ReachableAlongCurve(2, seed=0)
        >>> ds[0]["image"].shape, ds.kind
        (torch.Size([1, 48, 48]), 'relational')
    """

    task_name = "reachable_along_curve"
    kind = "relational"
    _task_code = 8
    _caps = True
