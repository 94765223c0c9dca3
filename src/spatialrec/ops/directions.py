"""Direction names, the published numeric codes, and the views that turn any sweep into a `down` sweep.

Every backend implements the `down` sweep only. The other three directions are the same sweep
on a transposed and/or flipped view of the tensor:

========  ==============================  =========================================
name      published code                  view that makes it a `down` sweep
========  ==============================  =========================================
right     0 (left to right, columns)      transpose H and W
left      1 (right to left, columns)      transpose H and W, then flip the new H
down      2 (top to bottom, rows)         identity
up        3 (bottom to top, rows)         flip H
========  ==============================  =========================================

Transposing keeps the neighbours of a line in increasing index order (row ``j-1, j, j+1`` for
the horizontal sweeps), and flipping the swept axis does not reorder the neighbours, so the
`down` maths applies unchanged to every view.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence, Union

import torch

DIRECTIONS: tuple[str, ...] = ("right", "left", "down", "up")
"""The four sweep directions, indexed by the published implementation's numeric codes 0-3."""

DirectionLike = Union[str, int]


def normalize_direction(direction: DirectionLike, argname: str = "direction") -> str:
    """Return the canonical name of a direction given by name or by published code.

    Args:
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"`` (case-insensitive) or the
            published codes ``0`` (right), ``1`` (left), ``2`` (down), ``3`` (up).
        argname: the argument name used in error messages.

    Raises:
        TypeError: ``direction`` is neither a string nor an integer.
        ValueError: it names no known direction.
    """
    if isinstance(direction, bool):  # bool is an int subclass; True is not a direction.
        raise TypeError(f"{argname} must be a direction name or code 0-3, got bool {direction!r}")
    if isinstance(direction, int):
        if 0 <= direction < len(DIRECTIONS):
            return DIRECTIONS[direction]
        raise ValueError(
            f"{argname}={direction!r} is not a published direction code; expected 0 (right), "
            "1 (left), 2 (down) or 3 (up)"
        )
    if isinstance(direction, str):
        name = direction.strip().lower()
        if name in DIRECTIONS:
            return name
        raise ValueError(f"{argname}={direction!r} is not a direction; expected one of {DIRECTIONS} or a code 0-3")
    raise TypeError(f"{argname} must be a direction name (str) or code 0-3 (int), got {type(direction).__name__}")


def normalize_directions(directions: Iterable[DirectionLike], argname: str = "directions") -> tuple[str, ...]:
    """Canonicalise a non-empty sequence of directions (names or codes; repeats allowed).

    Raises:
        TypeError: ``directions`` is a bare string/int or not iterable.
        ValueError: it is empty or holds an unknown direction.
    """
    return normalize_sequence(directions, argname, normalize_direction, example="('right', 'down')")


def normalize_sequence(
    directions: Iterable[DirectionLike],
    argname: str,
    normalize_one: Callable[[DirectionLike, str], str],
    example: str,
) -> tuple[str, ...]:
    """Apply ``normalize_one`` to every item of a non-empty sequence (shared by the 2D and 3D names)."""
    if isinstance(directions, (str, int)):
        raise TypeError(
            f"{argname} must be a sequence of directions such as {example}, got {directions!r}; "
            f"wrap a single direction in a tuple: ({directions!r},)"
        )
    try:
        items = list(directions)
    except TypeError:
        raise TypeError(f"{argname} must be a sequence of directions, got {type(directions).__name__}") from None
    if not items:
        raise ValueError(f"{argname} must hold at least one direction, got an empty sequence")
    return tuple(normalize_one(d, f"{argname}[{i}]") for i, d in enumerate(items))


def to_down_view(x: torch.Tensor, direction: str) -> torch.Tensor:
    """View ``x: (B, S, H, W)`` so that sweeping ``direction`` becomes sweeping its dim 2 downwards.

    Transposes are views; ``flip`` copies. The result may be non-contiguous.
    """
    if direction == "down":
        return x
    if direction == "up":
        return x.flip(2)
    if direction == "right":
        return x.transpose(2, 3)
    if direction == "left":
        return x.transpose(2, 3).flip(2)
    raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}")


def from_down_view(y: torch.Tensor, direction: str) -> torch.Tensor:
    """Inverse of :func:`to_down_view`: map a swept `down` view back to ``(B, S, H, W)``."""
    if direction == "down":
        return y
    if direction == "up":
        return y.flip(2)
    if direction == "right":
        return y.transpose(2, 3)
    if direction == "left":
        return y.flip(2).transpose(2, 3)
    raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}")


__all__: Sequence[str] = (
    "DIRECTIONS",
    "DirectionLike",
    "normalize_direction",
    "normalize_directions",
    "to_down_view",
    "from_down_view",
)
