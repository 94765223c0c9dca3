"""Drawing and placement helpers shared by the synthetic tasks (NumPy, image coordinates
``(row, col)``, float centres). Not public."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence, Union, cast

import numpy as np

SHAPE_KINDS = ("disc", "square", "ring", "diamond")


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



def _disc(rows: np.ndarray, cols: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """bool ``(H, W)``: pixels within ``r`` of ``(cy, cx)``."""
    return (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r


def _check_range(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in cast(Iterable[Any], value))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi



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



def _integer_centre(value: float) -> float:
    """``value`` rounded to a whole pixel: a disc drawn there rasterises to the same pixel count
    wherever it is (so moving a marker between such centres leaves the histogram unchanged)."""
    return float(round(value))
