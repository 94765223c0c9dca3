"""The six volumetric sweep directions and the views that turn any of them into the canonical sweep.

A 3D sweep runs over a state volume ``(B, S, D, H, W)`` plane by plane along one axis. The
names extend the 2D ones (same meaning along H and W, same codes 0-3) with two directions
along the depth axis D:

=====  ====  ======================================  =============================
name   code  sweep (first plane left unchanged)      plane axes ``(a, b)``
=====  ====  ======================================  =============================
right  0     along W, increasing index (w = 0 first)  (D, H)
left   1     along W, decreasing index                (D, H)
down   2     along H, increasing index (h = 0 first)  (D, W)
up     3     along H, decreasing index                (D, W)
in     4     along D, increasing index (d = 0 first)  (H, W)
out    5     along D, decreasing index                (H, W)
=====  ====  ======================================  =============================

Every backend implements one canonical sweep only: along dim 2 of a ``(B, S, L, A, Bb)``
tensor, increasing index. The view for a direction moves its swept axis to dim 2 with
``movedim`` (which keeps the two remaining axes in increasing axis order, as the neighbour
order requires) and flips dim 2 for the decreasing senses. Flipping the swept axis does not
reorder the neighbours of a plane, so the canonical maths applies unchanged to every view.

Neighbour order (normative, see ``docs/layers.md``): the 9 neighbours of plane position
``(a, b)`` are the previous plane's ``(a + da, b + db)`` for ``da`` in ``(-1, 0, 1)`` (outer)
and ``db`` in ``(-1, 0, 1)`` (inner), zero outside the volume, concatenated in that order,
``S`` values each.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .directions import DirectionLike, normalize_sequence

DIRECTIONS_3D: tuple[str, ...] = ("right", "left", "down", "up", "in", "out")
"""The six 3D sweep directions, indexed by their numeric codes 0-5 (0-3 as in 2D)."""

# direction -> (swept dim of the (B, S, D, H, W) tensor, decreasing index?)
_SWEEP_AXIS: dict[str, tuple[int, bool]] = {
    "right": (4, False),
    "left": (4, True),
    "down": (3, False),
    "up": (3, True),
    "in": (2, False),
    "out": (2, True),
}


def normalize_direction3d(direction: DirectionLike, argname: str = "direction") -> str:
    """Return the canonical name of a 3D direction given by name or code.

    Args:
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"``, ``"in"``, ``"out"``
            (case-insensitive) or the codes ``0``-``5`` in that order.
        argname: the argument name used in error messages.

    Raises:
        TypeError: ``direction`` is neither a string nor an integer.
        ValueError: it names no 3D direction.
    """
    if isinstance(direction, bool):  # bool is an int subclass; True is not a direction.
        raise TypeError(f"{argname} must be a 3D direction name or code 0-5, got bool {direction!r}")
    if isinstance(direction, int):
        if 0 <= direction < len(DIRECTIONS_3D):
            return DIRECTIONS_3D[direction]
        raise ValueError(
            f"{argname}={direction!r} is not a 3D direction code; expected 0 (right), 1 (left), "
            "2 (down), 3 (up), 4 (in) or 5 (out)"
        )
    if isinstance(direction, str):
        name = direction.strip().lower()
        if name in DIRECTIONS_3D:
            return name
        raise ValueError(
            f"{argname}={direction!r} is not a 3D direction; expected one of {DIRECTIONS_3D} or a code 0-5"
        )
    raise TypeError(f"{argname} must be a 3D direction name (str) or code 0-5 (int), got {type(direction).__name__}")


def normalize_directions3d(directions: Iterable[DirectionLike], argname: str = "directions") -> tuple[str, ...]:
    """Canonicalise a non-empty sequence of 3D directions (names or codes; repeats allowed).

    Raises:
        TypeError: ``directions`` is a bare string/int or not iterable.
        ValueError: it is empty or holds an unknown direction.
    """
    return normalize_sequence(directions, argname, normalize_direction3d, example="('right', 'down', 'in')")


def sweep_axis3d(direction: str) -> tuple[int, bool]:
    """``(dim, reverse)``: the dim of ``(B, S, D, H, W)`` that ``direction`` sweeps, and whether
    it sweeps it in decreasing index order."""
    try:
        return _SWEEP_AXIS[direction]
    except KeyError:
        raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS_3D}") from None


def to_canonical_view3d(x: torch.Tensor, direction: str) -> torch.Tensor:
    """View ``x: (B, S, D, H, W)`` as ``(B, S, L, A, Bb)`` so that ``direction`` sweeps dim 2 upwards.

    ``L`` is the length of the swept axis; ``A, Bb`` are the two other axes in increasing axis
    order. ``movedim`` is a view; ``flip`` (decreasing senses) copies.
    """
    dim, reverse = sweep_axis3d(direction)
    v = x.movedim(dim, 2)
    return v.flip(2) if reverse else v


def from_canonical_view3d(y: torch.Tensor, direction: str) -> torch.Tensor:
    """Inverse of :func:`to_canonical_view3d`: map ``(B, S, L, A, Bb)`` back to ``(B, S, D, H, W)``."""
    dim, reverse = sweep_axis3d(direction)
    if reverse:
        y = y.flip(2)
    return y.movedim(2, dim)


__all__: Sequence[str] = (
    "DIRECTIONS_3D",
    "from_canonical_view3d",
    "normalize_direction3d",
    "normalize_directions3d",
    "sweep_axis3d",
    "to_canonical_view3d",
)
