"""The readable volumetric directional GRU scan: the ground truth for the 3D fused backend.

Written to be checked against the maths in ``docs/layers.md`` line by line, not to be fast.
Every direction is reduced to the canonical sweep (along dim 2 of a ``(B, S, L, A, Bb)`` view,
increasing index; see :mod:`spatialrec.ops.directions3d`), which walks the planes one at a time
and applies the GRU equations of the 2D layer to a whole plane at once, with the 3x3
neighbourhood of the previous plane in place of the 2D layer's three neighbours. Autograd
differentiates it; nothing is written in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .directions3d import from_canonical_view3d, to_canonical_view3d
from .reference import compute_dtype, gru_update, sweep_lines

# (da, db) of the 9 neighbours, in the normative order: da outer, db inner.
NEIGHBOUR_OFFSETS_3D: tuple[tuple[int, int], ...] = tuple((da, db) for da in (-1, 0, 1) for db in (-1, 0, 1))


def gather_plane_neighbours(prev: torch.Tensor) -> torch.Tensor:
    """Stack the 9 neighbours of every plane position.

    Args:
        prev: ``(B, S, A, Bb)`` the previous plane, already swept.

    Returns:
        ``(B, 9S, A, Bb)`` with ``out[:, k*S:(k+1)*S, a, b] = prev[:, :, a+da, b+db]`` for the
        ``k``-th offset ``(da, db)`` of :data:`NEIGHBOUR_OFFSETS_3D`, zero outside the plane.
    """
    a_len, b_len = prev.shape[2], prev.shape[3]
    padded = F.pad(prev, (1, 1, 1, 1))  # zero padding: one position on each side of A and Bb
    return torch.cat(
        [padded[:, :, 1 + da : 1 + da + a_len, 1 + db : 1 + db + b_len] for da, db in NEIGHBOUR_OFFSETS_3D],
        dim=1,
    )


def gru_plane_update(
    prev: torch.Tensor,
    prior: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """One plane of the sweep.

    Args:
        prev: ``(B, S, A, Bb)`` the previous plane, already swept.
        prior: ``(B, S, A, Bb)`` this plane's own value before the sweep (the "prior" ``p``).
        weight_ih: ``(3S, 9S)``; weight_hh: ``(3S, S)``; bias_ih, bias_hh: ``(3S,)``.

    Returns:
        ``(B, S, A, Bb)`` the swept plane ``z * n + (1 - z) * p``.
    """
    a = gather_plane_neighbours(prev)  # (B, 9S, A, Bb)
    return gru_update(a, prior, weight_ih, weight_hh, bias_ih, bias_hh)


def reference_directional_gru_scan3d(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
) -> torch.Tensor:
    """Sweep ``x: (B, S, D, H, W)`` in ``direction`` (a canonical 3D name). Inputs are validated by the caller.

    Gates are computed in float32 (float64 when any operand is float64); the result has ``x.dtype``.
    """
    dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
    params = [p.to(dtype) for p in (weight_ih, weight_hh, bias_ih, bias_hh)]
    y = sweep_lines(to_canonical_view3d(x.to(dtype), direction), gru_plane_update, *params)
    return from_canonical_view3d(y, direction).to(x.dtype)
