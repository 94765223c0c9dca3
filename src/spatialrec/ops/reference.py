"""The readable directional GRU scan: the ground truth for every other backend, in 2D and 3D.

This file is written to be checked against the maths in ``docs/maths.md`` line by line, not to be
fast. Every sweep is reduced to the canonical sweep along dim 2 (see
:mod:`spatialrec.ops.directions`), which walks the lines (2D: rows, 3D: planes) one at a time and
applies the GRU equations to a whole line at once, reading the previous line through the
neighbour stencil (3 neighbours in 2D, 9 in 3D). Autograd differentiates it; nothing is written
in place.
"""

from __future__ import annotations

from typing import Optional

import torch

from .directions import from_canonical_view, gather_neighbours, to_canonical_view
from .gates import compute_dtype


def gru_update(
    a: torch.Tensor,
    prior: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    keep: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The GRU gate equations of docs/maths.md, for every position of a line at once.

    Args:
        a: ``(B, kS, *rest)`` the neighbour vectors (k = 3 in 2D, 9 in 3D), channels first.
        prior: ``(B, S, *rest)`` the positions' own values (the "prior" ``p``).
        weight_ih: ``(3S, kS)``; weight_hh: ``(3S, S)``; bias_ih, bias_hh: ``(3S,)``.
        keep: ``(B, S, *rest)`` what the ``(1 - z)`` term keeps; default ``prior`` (the
            published cell, ``carry="prior"``); the previous line's states for ``carry="line"``.

    Returns:
        ``(B, S, *rest)`` the updated values ``z * n + (1 - z) * keep``.
    """
    bias_shape = (-1,) + (1,) * (prior.dim() - 2)
    g_i = torch.einsum("os,bs...->bo...", weight_ih, a) + bias_ih.view(bias_shape)
    g_h = torch.einsum("os,bs...->bo...", weight_hh, prior) + bias_hh.view(bias_shape)
    r_i, z_i, n_i = g_i.chunk(3, dim=1)
    r_h, z_h, n_h = g_h.chunk(3, dim=1)

    r = torch.sigmoid(r_i + r_h)
    z = torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return z * n + (1 - z) * (prior if keep is None else keep)


def reference_directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` or ``(B, S, D, H, W)`` in ``direction`` (a canonical name).

    Inputs are validated by the caller. Line 0 of the canonical view is left unchanged; line
    ``i`` is :func:`gru_update` of the swept line ``i - 1``'s neighbours and the prior line ``i``,
    keeping (``carry``, see :data:`spatialrec.ops.gates.CARRIES`) the prior line ``i`` or the
    swept line ``i - 1``.
    Gates are computed in float32 (float64 when any operand is float64); the result has ``x.dtype``.
    """
    dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
    w_ih, w_hh, b_ih, b_hh = (p.to(dtype) for p in (weight_ih, weight_hh, bias_ih, bias_hh))
    v = to_canonical_view(x.to(dtype), direction)
    lines = [v[:, :, 0]]
    for i in range(1, v.shape[2]):
        keep = lines[-1] if carry == "line" else None
        lines.append(gru_update(gather_neighbours(lines[-1]), v[:, :, i], w_ih, w_hh, b_ih, b_hh, keep=keep))
    return from_canonical_view(torch.stack(lines, dim=2), direction).to(x.dtype)


reference_directional_gru_scan3d = reference_directional_gru_scan
"""Alias kept for code written against the former 3D module: the reference scan takes both."""

__all__ = ["gru_update", "reference_directional_gru_scan", "reference_directional_gru_scan3d"]
