"""Relational tasks built around a marker: :class:`NearerMarker` (which of two markers is nearer)
and :class:`SameBand` (which band holds the marker).

In both, the labels flip when the marker changes (the two markers swap grey levels; the marker
moves to another band) while the noiseless image histogram stays exactly the same: markers are
discs of one radius at whole-pixel centres (the same pixel count wherever they are) that never
touch an object or a line. And every object keeps ``min_gap`` pixels from every place a marker can
be, so a model that sees less than that around a pixel cannot tell its label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ...checks import check_float, check_int
from ._draw import _check_range, _disc, _extent, _integer_centre, _shape_mask
from .base import TaskSettings, _SyntheticTask

if TYPE_CHECKING:  # annotations only: no runtime dependency
    from typing_extensions import Unpack

# Grey levels: objects, the bright and the dim marker, the band lines. Objects are squares and
# markers discs, so shape alone tells a marker from an object.
_OBJECT_LEVEL, _BRIGHT, _DIM, _LINE = 0.7, 1.0, 0.4, 0.4


def _check_common(
    num_objects: int, radius_range: tuple[float, float], marker_radius: float, min_gap: float
) -> tuple[int, tuple[float, float], float, float]:
    """The checked knobs both marker tasks share: ``(num_objects, radius_range, marker_radius, min_gap)``."""
    return (
        check_int("num_objects", num_objects, 2, 12),
        _check_range("radius_range", radius_range, 0.02, 0.15),
        check_float("marker_radius", marker_radius, 1.0, 5.0),
        check_float("min_gap", min_gap, 0.0, 30.0),
    )


# ---------------------------------------------------------------------------- nearer marker


@dataclass(frozen=True)
class MarkersLayout:
    """``markers[k] = (row, col)``: whole-pixel centres of the two markers; ``bright`` indexes the
    bright one; ``objects[k] = (centre_row, centre_col, radius)`` (squares)."""

    markers: tuple[tuple[float, float], tuple[float, float]]
    bright: int
    objects: tuple[tuple[float, float, float], ...]
    noise_seed: int


class NearerMarker(_SyntheticTask):
    """Nearer marker: segment the objects nearer (centre distance) to the bright marker than to the dim one.

    Two markers (discs of the same radius, one at grey level 1.0, one at 0.4) and ``num_objects``
    squares at grey level 0.7 anywhere in the image. The mask is every square whose centre is
    nearer the bright marker's centre; the two distances of every square differ by at least
    ``margin`` pixels (no near-ties), and each side has at least one square.

    Kind: **relational**. Swapping the two markers' grey levels flips every label and leaves the
    noiseless histogram exactly as it was (same discs, same pixel counts): only the positions of
    the squares relative to the markers say which are targets. Why a local model cannot solve it:
    every square is at least ``min_gap`` pixels (12 by default, boundary to boundary) from both
    markers, so a pixel's label hangs on pixels that far away; marking every square gives Dice
    about ``2k / (k + n)`` with ``k`` of ``n`` squares nearer the bright marker (about 0.67).

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_objects: squares per image, 2-12 (difficulty knob); default 4.
        radius_range: square radius as fractions of ``min(H, W)``; default ``(0.05, 0.07)``.
        marker_radius: radius of both markers in pixels; default 2.5.
        min_gap: minimal gap in pixels between a square and either marker; default 12.
        margin: minimal difference in pixels between a square's distances to the two markers;
            default 4.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (1, H, W) 0/1, "id": str}``.

    Example:
        >>> ds = NearerMarker(2, seed=0)
        >>> ds[0]["image"].shape, ds.kind
        (torch.Size([1, 48, 48]), 'relational')
    """

    task_name = "nearer_marker"
    kind = "relational"
    _task_code = 5

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_objects: int = 4,
        radius_range: tuple[float, float] = (0.05, 0.07),
        marker_radius: float = 2.5,
        min_gap: float = 12.0,
        margin: float = 4.0,
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
        self.num_objects, self.radius_range, self.marker_radius, self.min_gap = _check_common(
            num_objects, radius_range, marker_radius, min_gap
        )
        self.margin = check_float("margin", margin, 0.0, 20.0)

    def layout(self, index: int) -> MarkersLayout:
        """The random choices of sample ``index`` (deterministic in seed, split and index)."""
        rng = self._rng(index)
        h, w = self.image_size
        mr, base = self.marker_radius, min(h, w)
        lo_m = math.ceil(mr) + 1
        for _attempt in range(500):
            markers = tuple((_integer_centre(rng.uniform(lo_m, h - 1 - lo_m)), _integer_centre(rng.uniform(lo_m, w - 1 - lo_m))) for _ in range(2))
            objects: list[tuple[float, float, float]] = []
            for _k in range(self.num_objects):
                for _try in range(100):
                    r = float(rng.uniform(*self.radius_range) * base)
                    e = _extent("square", r) * math.sqrt(2)  # bounding circle of the square
                    c = (float(rng.uniform(e, h - 1 - e)), float(rng.uniform(e, w - 1 - e)))
                    d = [math.hypot(c[0] - m[0], c[1] - m[1]) for m in markers]
                    if (
                        min(d) >= e + mr + self.min_gap
                        and abs(d[0] - d[1]) >= self.margin
                        and all(math.hypot(c[0] - o[0], c[1] - o[1]) >= e + _extent("square", o[2]) * math.sqrt(2) + 2 for o in objects)
                    ):
                        objects.append((c[0], c[1], r))
                        break
                else:
                    break
            if len(objects) == self.num_objects and len({self._nearer(o, markers) for o in objects}) == 2:
                bright = int(rng.integers(2))
                return MarkersLayout((markers[0], markers[1]), bright, tuple(objects), int(rng.integers(2**31 - 1)))
        raise ValueError(
            f"could not place {self.num_objects} squares at least {self.min_gap} px from two markers in image_size "
            f"{self.image_size} (sample {index}); use a larger image, fewer or smaller squares or a smaller min_gap"
        )

    @staticmethod
    def _nearer(obj: tuple[float, float, float], markers: Sequence[tuple[float, float]]) -> int:
        d = [math.hypot(obj[0] - m[0], obj[1] - m[1]) for m in markers]
        return int(d[1] < d[0])

    def render(self, layout: MarkersLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        rows, cols = self._grid()
        image = np.zeros(self.image_size)
        mask = np.zeros(self.image_size, dtype=bool)
        for o in layout.objects:
            m = _shape_mask("square", rows, cols, *o)
            image[m] = _OBJECT_LEVEL
            if self._nearer(o, layout.markers) == layout.bright:
                mask |= m
        for k, (my, mx) in enumerate(layout.markers):
            image[_disc(rows, cols, my, mx, self.marker_radius)] = _BRIGHT if k == layout.bright else _DIM
        return self._finish(image, layout.noise_seed), mask


# ---------------------------------------------------------------------------- same band


@dataclass(frozen=True)
class BandsLayout:
    """In canvas coordinates (the image itself for horizontal bands, its transpose when
    ``vertical``): ``lines`` are the rows of the separator lines, bands are the row ranges between
    them; the marker sits in band ``marker_band`` at column ``marker_col`` (its row is the band's
    middle row); ``objects[k] = (centre_row, centre_col, radius, band)`` (squares)."""

    vertical: bool
    lines: tuple[int, ...]
    marker_band: int
    marker_col: float
    objects: tuple[tuple[float, float, float, int], ...]
    noise_seed: int


class SameBand(_SyntheticTask):
    """Same band: segment the objects in the band that holds the marker.

    The image is cut into ``num_bands`` bands by thin lines (grey level 0.4) across it, horizontal
    or vertical (drawn per sample, so both row and column relations occur), of random heights; a
    marker (a disc, grey level 1.0) sits in the middle of one band near one end of it, and
    ``num_objects`` squares (grey level 0.7) lie in the bands, at least one in the marker's band
    and one elsewhere. The mask is every square in the marker's band.

    Kind: **relational**. Moving the marker to another band (same distance from the border,
    middle of that band) flips the labels of the squares in both bands and leaves the noiseless
    histogram exactly as it was. Why a local model cannot solve it: every square is at least
    ``min_gap`` pixels (12 by default, boundary to boundary) from every place the marker can be,
    i.e. from the marker's end of every band, so a pixel must see that far along its band; marking
    every square gives Dice about ``2k / (k + n)`` with ``k`` of ``n`` squares in the marker's band.

    Args:
        num_samples: number of samples (>= 1).
        image_size: ``int`` or ``(H, W)``, at least 24; default 48.
        num_bands: bands per image, 2-5 (difficulty knob); default 3.
        num_objects: squares per image, 2-12; default 5.
        radius_range: square radius as fractions of ``min(H, W)``; default ``(0.05, 0.07)``.
        marker_radius: radius of the marker in pixels; default 2.5.
        min_gap: minimal gap in pixels between a square and any place of the marker; default 12.
        min_band: minimal band height in pixels; default 10.
        noise_std, split, seed, transform: as for :class:`SyntheticLongRange`.

    Items: as :class:`NearerMarker`.

    Example:
        >>> SameBand(2, seed=0)[1]["mask"].shape
        torch.Size([1, 48, 48])
    """

    task_name = "same_band"
    kind = "relational"
    _task_code = 6

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: Union[int, Sequence[int]] = 48,
        num_bands: int = 3,
        num_objects: int = 5,
        radius_range: tuple[float, float] = (0.05, 0.07),
        marker_radius: float = 2.5,
        min_gap: float = 12.0,
        min_band: int = 10,
        **settings: Unpack[TaskSettings],
    ) -> None:
        super().__init__(num_samples, image_size, **settings)
        self.num_bands = check_int("num_bands", num_bands, 2, 5)
        self.num_objects, self.radius_range, self.marker_radius, self.min_gap = _check_common(
            num_objects, radius_range, marker_radius, min_gap
        )
        self.min_band = check_int("min_band", min_band, 2 * math.ceil(self.marker_radius) + 3)
        if min(self.image_size) < self.num_bands * (self.min_band + 1) - 1:
            raise ValueError(
                f"image_size {self.image_size} cannot hold num_bands={self.num_bands} bands of min_band={self.min_band} px"
            )

    def _bands(self, lines: Sequence[int], height: int) -> list[tuple[int, int]]:
        """Inclusive row ranges of the bands between the separator lines."""
        edges = [-1, *lines, height]
        return [(edges[b] + 1, edges[b + 1] - 1) for b in range(len(edges) - 1)]

    def marker_centre(self, layout: BandsLayout, band: Optional[int] = None) -> tuple[float, float]:
        """Canvas ``(row, col)`` of the marker in ``band`` (default: the layout's own band)."""
        lo, hi = self._bands(layout.lines, self._canvas(layout.vertical)[0])[layout.marker_band if band is None else band]
        return float((lo + hi) // 2), layout.marker_col

    def _canvas(self, vertical: bool) -> tuple[int, int]:
        h, w = self.image_size
        return (w, h) if vertical else (h, w)

    def layout(self, index: int) -> BandsLayout:
        """The random choices of sample ``index`` (deterministic in seed, split and index)."""
        rng = self._rng(index)
        vertical = bool(rng.integers(2))
        ch, cw = self._canvas(vertical)
        nb = self.num_bands
        # Band heights: min_band each, the rest of the rows shared out at random.
        slack = ch - (nb - 1) - nb * self.min_band
        heights = self.min_band + rng.multinomial(slack, np.full(nb, 1.0 / nb))
        lines = tuple(int(v) for v in np.cumsum(heights + 1)[:-1] - 1)
        bands = self._bands(lines, ch)
        marker_band = int(rng.integers(nb))
        mr = self.marker_radius
        offset = math.ceil(mr) + 1 + int(rng.integers(3))
        marker_col = float(offset if rng.integers(2) == 0 else cw - 1 - offset)
        places = [(float((lo + hi) // 2), marker_col) for lo, hi in bands]
        base = min(self.image_size)
        for _attempt in range(500):
            # Object 0 in the marker's band, object 1 in another: both labels occur.
            other = int((marker_band + 1 + rng.integers(nb - 1)) % nb)
            obj_bands = [marker_band, other] + [int(b) for b in rng.integers(nb, size=self.num_objects - 2)]
            objects: list[tuple[float, float, float, int]] = []
            for b in obj_bands:
                lo, hi = bands[b]
                for _try in range(100):
                    r = float(rng.uniform(*self.radius_range) * base)
                    e = _extent("square", r)
                    if lo + e > hi - e:
                        break
                    c = (float(rng.uniform(lo + e, hi - e)), float(rng.uniform(e, cw - 1 - e)))
                    if all(math.hypot(c[0] - p[0], c[1] - p[1]) >= e * math.sqrt(2) + mr + self.min_gap for p in places) and all(
                        max(abs(c[0] - o[0]), abs(c[1] - o[1])) >= e + _extent("square", o[2]) + 2 for o in objects
                    ):
                        objects.append((c[0], c[1], r, b))
                        break
                else:
                    break
            if len(objects) == self.num_objects:
                return BandsLayout(vertical, lines, marker_band, marker_col, tuple(objects), int(rng.integers(2**31 - 1)))
        raise ValueError(
            f"could not place {self.num_objects} squares in {nb} bands of image_size {self.image_size} (sample {index}); "
            f"use a larger image, fewer or smaller squares, fewer bands or a smaller min_gap"
        )

    def render(self, layout: BandsLayout) -> tuple[np.ndarray, np.ndarray]:
        """Draw a layout: image float32 ``(H, W)``, mask bool ``(H, W)``."""
        ch, cw = self._canvas(layout.vertical)
        rows, cols = np.mgrid[0:ch, 0:cw].astype(np.float64)
        image = np.zeros((ch, cw))
        mask = np.zeros((ch, cw), dtype=bool)
        image[list(layout.lines)] = _LINE
        for cy, cx, r, band in layout.objects:
            m = _shape_mask("square", rows, cols, cy, cx, r)
            image[m] = _OBJECT_LEVEL
            if band == layout.marker_band:
                mask |= m
        image[_disc(rows, cols, *self.marker_centre(layout), self.marker_radius)] = _BRIGHT
        if layout.vertical:
            image, mask = image.T.copy(), mask.T.copy()
        return self._finish(image, layout.noise_seed), mask
