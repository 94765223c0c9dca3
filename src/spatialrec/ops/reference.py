"""The readable directional GRU scan: the ground truth for every other backend.

This file is written to be checked against the maths in ``DESIGN.md`` line by line, not to be
fast. Every sweep is reduced to the `down` sweep (see :mod:`spatialrec.ops.directions`); the
`down` sweep walks the rows one at a time and applies the GRU equations to a whole row at once.
Autograd differentiates it; nothing is written in place.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .directions import from_down_view, to_down_view


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the gates are computed in: float64 if any operand is float64, else float32.

    Half-precision inputs (bfloat16, float16) are therefore computed with float32 arithmetic and
    accumulation; the result is cast back to the input's dtype by the caller.
    """
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def gru_update(
    a: torch.Tensor,
    prior: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """The GRU gate equations of DESIGN.md, for every position of a line (or plane) at once.

    Args:
        a: ``(B, kS, ...)`` the neighbour vectors (k = 3 in 2D, 9 in 3D), channels first.
        prior: ``(B, S, ...)`` the positions' own values (the "prior" ``p``).
        weight_ih: ``(3S, kS)``; weight_hh: ``(3S, S)``; bias_ih, bias_hh: ``(3S,)``.

    Returns:
        ``(B, S, ...)`` the updated values ``z * n + (1 - z) * p``.
    """
    bias_shape = (-1,) + (1,) * (prior.dim() - 2)
    g_i = torch.einsum("os,bs...->bo...", weight_ih, a) + bias_ih.view(bias_shape)
    g_h = torch.einsum("os,bs...->bo...", weight_hh, prior) + bias_hh.view(bias_shape)
    r_i, z_i, n_i = g_i.chunk(3, dim=1)
    r_h, z_h, n_h = g_h.chunk(3, dim=1)

    r = torch.sigmoid(r_i + r_h)
    z = torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return z * n + (1 - z) * prior


def gru_row_update(
    prev: torch.Tensor,
    prior: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """One line of the sweep.

    Args:
        prev: ``(B, S, W)`` the previous line, already swept.
        prior: ``(B, S, W)`` this line's own value before the sweep (the "prior" ``p``).
        weight_ih: ``(3S, 3S)``; weight_hh: ``(3S, S)``; bias_ih, bias_hh: ``(3S,)``.

    Returns:
        ``(B, S, W)`` the swept line ``z * n + (1 - z) * p``.
    """
    # Zero padding outside the image, then the neighbours j-1, j, j+1 stacked in this order
    # along the channel axis: a[:, k*S:(k+1)*S, j] = prev[:, :, j-1+k].
    padded = F.pad(prev, (1, 1))
    a = torch.cat([padded[..., :-2], padded[..., 1:-1], padded[..., 2:]], dim=1)  # (B, 3S, W)
    return gru_update(a, prior, weight_ih, weight_hh, bias_ih, bias_hh)


def sweep_lines(
    x: torch.Tensor,
    line_update: Callable[..., torch.Tensor],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """The canonical sweep along dim 2: ``x: (B, S, L, ...)`` priors -> swept states, same shape.

    Line (2D: row, 3D: plane) 0 is left unchanged; line ``i`` is ``line_update(swept line i - 1,
    prior line i, *params)`` (:func:`gru_row_update` in 2D, the plane update in 3D).
    """
    lines = [x[:, :, 0]]
    for i in range(1, x.shape[2]):
        lines.append(line_update(lines[-1], x[:, :, i], weight_ih, weight_hh, bias_ih, bias_hh))
    return torch.stack(lines, dim=2)


def reference_directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` in ``direction`` (a canonical name). Inputs are validated by the caller.

    Gates are computed in float32 (float64 when any operand is float64); the result has ``x.dtype``.
    """
    dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
    params = [p.to(dtype) for p in (weight_ih, weight_hh, bias_ih, bias_hh)]
    y = sweep_lines(to_down_view(x.to(dtype), direction), gru_row_update, *params)
    return from_down_view(y, direction).to(x.dtype)
