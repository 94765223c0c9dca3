"""Sweep directions for every number of spatial dimensions, and the views that make any sweep canonical.

One table serves 2D and 3D. A direction sweeps one spatial axis, in increasing or decreasing
index order; its numeric code is its position in :data:`DIRECTIONS` (codes 0-3 are the published
implementation's; 4 and 5 sweep the depth axis of a volume):

=====  ====  ==========================================  ===============
name   code  sweep (first line or plane left unchanged)  valid in
=====  ====  ==========================================  ===============
right  0     along W, increasing index (w = 0 first)      2D, 3D
left   1     along W, decreasing index                    2D, 3D
down   2     along H, increasing index (h = 0 first)      2D, 3D
up     3     along H, decreasing index                    2D, 3D
in     4     along D, increasing index (d = 0 first)      3D
out    5     along D, decreasing index                    3D
=====  ====  ==========================================  ===============

Every backend implements one canonical sweep: along dim 2 of a ``(B, S, L, *rest)`` tensor,
increasing index. :func:`to_canonical_view` moves a direction's swept axis to dim 2 with
``movedim`` (which keeps the remaining axes in increasing axis order, as the neighbour order
requires) and flips dim 2 for the decreasing senses; flipping the swept axis does not reorder
the neighbours of a line, so the canonical maths applies unchanged to every view.

Neighbour order (normative, see ``docs/layers.md``): the neighbours of position ``q`` of a line
(2D: a row or column, ``q = (j,)``; 3D: a plane, ``q = (a, b)``) are the previous line's
``q + o`` for every offset ``o`` in ``(-1, 0, 1)^(spatial_dims - 1)``, row-major (the first
remaining axis outermost), zero outside the image: 3 neighbours in 2D, 9 in 3D
(:func:`num_neighbours`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Set
from typing import Union

import torch
import torch.nn.functional as F

from ..checks import check_spatial_dims

DIRECTIONS: tuple[str, ...] = ("right", "left", "down", "up", "in", "out")
"""Every sweep direction, indexed by its numeric code (0-3 as published; 4, 5 along depth)."""

DEFAULT_DIRECTIONS: dict[int, tuple[str, ...]] = {2: ("right", "down"), 3: ("right", "down", "in")}
"""Default sweep order per number of spatial dimensions: the paper's right-then-down in 2D; one
sweep per axis in 3D (after them every voxel has seen its whole upstream octant)."""

DirectionLike = Union[str, int]

# direction -> (swept axis counted from the last spatial axis: 1 = W, 2 = H, 3 = D; decreasing?):
# the codes come in pairs per axis, increasing sense first (the table of the module docstring).
_AXIS: dict[str, tuple[int, bool]] = {name: (code // 2 + 1, code % 2 == 1) for code, name in enumerate(DIRECTIONS)}


def valid_directions(spatial_dims: int) -> tuple[str, ...]:
    """The directions of ``spatial_dims`` dimensions: ``DIRECTIONS[:4]`` in 2D, all six in 3D."""
    return DIRECTIONS[: 2 * check_spatial_dims(spatial_dims)]


def num_neighbours(spatial_dims: int) -> int:
    """Neighbours a position reads on the previous line: 3 in 2D, 9 in 3D (``3 ** (spatial_dims - 1)``)."""
    return 3 ** (check_spatial_dims(spatial_dims) - 1)


def normalize_direction(direction: DirectionLike, spatial_dims: int = 2, argname: str = "direction") -> str:
    """Return the canonical name of a direction given by name or by numeric code.

    Args:
        direction: a name of :data:`DIRECTIONS` (case-insensitive) or its code.
        spatial_dims: 2 (``right``, ``left``, ``down``, ``up``; codes 0-3) or 3 (also ``in``,
            ``out``; codes 0-5).
        argname: the argument name used in error messages.

    Raises:
        TypeError: ``direction`` is neither a string nor an integer.
        ValueError: it names no direction of ``spatial_dims`` dimensions.

    Example:
        >>> normalize_direction(2), normalize_direction("IN", spatial_dims=3)
        ('down', 'in')
    """
    names = valid_directions(spatial_dims)
    if isinstance(direction, bool):  # bool is an int subclass; True is not a direction.
        raise TypeError(f"{argname} must be a direction name or code 0-{len(names) - 1}, got bool {direction!r}")
    if isinstance(direction, int):
        if 0 <= direction < len(names):
            return names[direction]
        kind = "published" if spatial_dims == 2 else "3D"  # codes 0-3 are the published ones
        codes = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
        raise ValueError(f"{argname}={direction!r} is not a {kind} direction code; expected {codes}")
    if isinstance(direction, str):
        name = direction.strip().lower()
        if name in names:
            return name
        hint = " ('in' and 'out' sweep the depth of a volume: spatial_dims=3)" if name in DIRECTIONS else ""
        what = "direction" if spatial_dims == 2 else f"{spatial_dims}D direction"
        raise ValueError(
            f"{argname}={direction!r} is not a {what}; expected one of {names} or a code 0-{len(names) - 1}{hint}"
        )
    raise TypeError(
        f"{argname} must be a direction name (str) or code 0-{len(names) - 1} (int), got {type(direction).__name__}"
    )


def normalize_directions(
    directions: Iterable[DirectionLike], spatial_dims: int = 2, argname: str = "directions"
) -> tuple[str, ...]:
    """Canonicalise a non-empty, ordered collection of directions (names or codes; repeats allowed).

    The order is the composition order of the sweeps, so unordered collections (``set``,
    ``frozenset``, mappings) are refused: their iteration order can change between processes
    (``PYTHONHASHSEED``), and the same weights would compute another function.

    Raises:
        TypeError: ``directions`` is a bare string/int, unordered, or not iterable.
        ValueError: it is empty or holds an unknown direction.
    """
    example = str(DEFAULT_DIRECTIONS[check_spatial_dims(spatial_dims)])
    if isinstance(directions, (str, int)):
        raise TypeError(
            f"{argname} must be a sequence of directions such as {example}, got {directions!r}; "
            f"wrap a single direction in a tuple: ({directions!r},)"
        )
    if isinstance(directions, (Set, Mapping)):
        raise TypeError(
            f"{argname} must be an ordered sequence (tuple or list) such as {example}, got a "
            f"{type(directions).__name__}: the sweeps compose in order, and a set's order is arbitrary"
        )
    try:
        items = list(directions)
    except TypeError:
        raise TypeError(f"{argname} must be a sequence of directions, got {type(directions).__name__}") from None
    if not items:
        raise ValueError(f"{argname} must hold at least one direction, got an empty sequence")
    return tuple(normalize_direction(d, spatial_dims, f"{argname}[{i}]") for i, d in enumerate(items))


def sweep_dim(direction: str, ndim: int) -> tuple[int, bool]:
    """``(dim, reverse)``: the dim of an ``ndim``-dim ``(B, S, ...)`` tensor that ``direction``
    sweeps, and whether it sweeps it in decreasing index order."""
    try:
        axis, reverse = _AXIS[direction]
    except KeyError:
        raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}") from None
    if axis > ndim - 2:
        raise ValueError(f"direction={direction!r} needs at least {axis} spatial dims, got a {ndim}-dim tensor")
    return ndim - axis, reverse


def to_canonical_view(x: torch.Tensor, direction: str) -> torch.Tensor:
    """View ``x: (B, S, *spatial)`` as ``(B, S, L, *rest)`` so that ``direction`` sweeps dim 2 upwards.

    ``L`` is the length of the swept axis; ``rest`` the remaining spatial axes in increasing axis
    order. ``movedim`` is a view; ``flip`` (decreasing senses) copies.
    """
    dim, reverse = sweep_dim(direction, x.dim())
    v = x.movedim(dim, 2)
    return v.flip(2) if reverse else v


def from_canonical_view(y: torch.Tensor, direction: str) -> torch.Tensor:
    """Inverse of :func:`to_canonical_view`: map ``(B, S, L, *rest)`` back to ``(B, S, *spatial)``."""
    dim, reverse = sweep_dim(direction, y.dim())
    if reverse:
        y = y.flip(2)
    return y.movedim(2, dim)


def neighbour_offsets(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """The neighbour offsets over the remaining axes in the normative (row-major) order."""
    return tuple(itertools.product((-1, 0, 1), repeat=check_spatial_dims(spatial_dims) - 1))


def gather_neighbours(prev: torch.Tensor) -> torch.Tensor:
    """Stack the neighbours of every position of a line.

    Args:
        prev: ``(B, S, *rest)`` the previous line, already swept (``rest``: ``(W,)`` in 2D,
            ``(A, Bb)`` in 3D).

    Returns:
        ``(B, kS, *rest)`` with ``out[:, k*S:(k+1)*S, q] = prev[:, :, q + o_k]`` for the ``k``-th
        offset ``o_k`` of :func:`neighbour_offsets`, zero outside the line.
    """
    rest = prev.shape[2:]
    padded = F.pad(prev, (1, 1) * len(rest))  # one zero on each side of every remaining axis
    return torch.cat(
        [
            padded[(slice(None), slice(None)) + tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, rest))]
            for offset in neighbour_offsets(len(rest) + 1)
        ],
        dim=1,
    )


__all__ = [
    "DEFAULT_DIRECTIONS",
    "DIRECTIONS",
    "DirectionLike",
    "from_canonical_view",
    "gather_neighbours",
    "neighbour_offsets",
    "normalize_direction",
    "normalize_directions",
    "num_neighbours",
    "sweep_dim",
    "to_canonical_view",
    "valid_directions",
]
