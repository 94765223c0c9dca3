"""The fused volumetric directional GRU scan: a custom autograd function with a hand-written backward.

Same maths as :mod:`spatialrec.ops.reference`, organised for speed and memory:

- the volume is laid out plane-major, ``(L, B, S, A, Bb)``, so that every plane is one
  contiguous block and the sweep walks planes with plain indexing (decreasing senses walk the
  planes backwards instead of flipping a copy);
- the prior term ``W_hh p + b_hh`` of every plane is computed up front in one batched GEMM;
- the neighbour term of a plane is one 3x3 convolution of the previous plane with ``W_ih``
  rearranged as a ``(3S, S, 3, 3)`` kernel: ``kernel[o, s, da + 1, db + 1] = W_ih[o, k S + s]``
  with ``k = 3 (da + 1) + (db + 1)``, which is exactly the normative neighbour order (a
  convolution is a cross-correlation, so kernel tap ``(da + 1, db + 1)`` reads position
  ``(a + da, b + db)``), one GEMM-like call per plane;
- nothing but the input and the output is kept for the backward pass. The backward recomputes
  every gate at once (the swept output is known for every plane, so the recomputation has no
  sequential dependency: one batched convolution and one batched GEMM over all planes), then
  runs the only truly sequential part, the gradient carried from plane to plane, one transposed
  convolution per plane; the weight gradients are again single batched calls.

:func:`plane_forward` and :func:`plane_backward` are the two passes without autograd: the
autograd function below and the registered ops (:mod:`spatialrec.ops.library`, which keep the
swept states between them) share them.

Forward memory beyond input and output: one ``3S``-channel buffer for the hoisted prior term.
Backward transient memory: about ``9S`` values per voxel (gates, gate gradients, state gradient).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.grad import conv2d_weight

from .directions import sweep_dim
from .gates import compute_dtype


def _ih_kernel(weight_ih: torch.Tensor, s: int) -> torch.Tensor:
    """``(3S, 9S)`` neighbour weights -> ``(3S, S, 3, 3)`` convolution kernel (see module docstring)."""
    return weight_ih.reshape(3 * s, 3, 3, s).permute(0, 3, 1, 2).contiguous()


def _ih_kernel_grad_to_weight(grad_kernel: torch.Tensor, s: int) -> torch.Tensor:
    """Inverse layout of :func:`_ih_kernel`: ``(3S, S, 3, 3)`` -> ``(3S, 9S)``."""
    return grad_kernel.permute(0, 2, 3, 1).reshape(3 * s, 9 * s)


def _prior_term(xp: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor) -> torch.Tensor:
    """``W_hh p + b_hh`` for every plane at once: ``(N, S, A, Bb) -> (N, 3S, A, Bb)``."""
    n, s, a, b = xp.shape
    # bmm with a stride-0 expanded weight: broadcasting matmul would copy operands and result.
    gh = torch.bmm(weight_hh.expand(n, 3 * s, s), xp.reshape(n, s, a * b))
    return gh.add_(bias_hh[:, None]).view(n, 3 * s, a, b)


def plane_forward(
    xp: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    reverse: bool,
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep plane-major ``xp: (L, B, S, A, Bb)`` along dim 0 (backwards when ``reverse``), no autograd.

    ``carry`` (:data:`spatialrec.ops.gates.CARRIES`): what ``(1 - z)`` keeps, the prior plane or
    the previous swept plane.

    Returns the swept states ``(L, B, S, A, Bb)`` in the compute dtype, contiguous: all that
    :func:`plane_backward` needs besides the inputs.
    """
    dtype = compute_dtype(xp, weight_ih, weight_hh, bias_ih, bias_hh)
    w_ih, w_hh, b_ih, b_hh = (p.to(dtype) for p in (weight_ih, weight_hh, bias_ih, bias_hh))
    x = xp.to(dtype).contiguous()
    length, batch, s, a, b = x.shape
    out = torch.empty_like(x)
    first = length - 1 if reverse else 0
    step = -1 if reverse else 1
    out[first] = x[first]
    if length > 1:
        kernel = _ih_kernel(w_ih, s)
        gh = _prior_term(x.view(length * batch, s, a, b), w_hh, b_hh).view(length, batch, 3 * s, a, b)
        for t in range(1, length):
            cur = first + step * t
            gi = F.conv2d(out[cur - step], kernel, b_ih, padding=1)  # fresh: updated in place below
            g_h = gh[cur]
            rz = torch.sigmoid_(gi[:, : 2 * s].add_(g_h[:, : 2 * s]))
            r, z = rz[:, :s], rz[:, s:]
            n = torch.tanh_(gi[:, 2 * s :].addcmul_(r, g_h[:, 2 * s :]))
            keep = out[cur - step] if carry == "line" else x[cur]
            # h = z n + (1 - z) keep, written as keep + z (n - keep)
            torch.addcmul(keep, z, n.sub_(keep), out=out[cur])
    return out


def plane_backward(
    grad_out: torch.Tensor,
    xp: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    out: torch.Tensor,
    reverse: bool,
    carry: str = "prior",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of :func:`plane_forward` from its output ``out``, no autograd.

    With ``carry="line"`` the kept share ``dh (1 - z)`` of each plane flows into the previous
    plane's ``dh`` inside the sequential loop, the priors get no direct share, and ``dz`` uses
    ``n - h_prev``.

    Returns ``(dxp, d weight_ih, d weight_hh, d bias_ih, d bias_hh)`` in the compute dtype
    (``dxp`` plane-major like ``xp``).
    """
    line = carry == "line"
    dtype = out.dtype
    w_ih, w_hh, b_ih, b_hh = (p.to(dtype) for p in (weight_ih, weight_hh, bias_ih, bias_hh))
    x = xp.to(dtype).contiguous()
    length, batch, s, a, b = x.shape
    # dh: total gradient of each swept plane; accumulated in place as the carry flows back.
    dh = torch.empty_like(out).copy_(grad_out)
    dx = torch.empty_like(x)
    first = length - 1 if reverse else 0
    step = -1 if reverse else 1
    zeros = (torch.zeros_like(w_ih), torch.zeros_like(w_hh), torch.zeros_like(b_ih), torch.zeros_like(b_hh))
    if length == 1:
        grads = (dh,) + zeros
    else:
        # Planes updated by the sweep ("cur") and the planes they read ("prev"); j-th entries pair up.
        cur_sl = slice(0, length - 1) if reverse else slice(1, length)
        prev_sl = slice(1, length) if reverse else slice(0, length - 1)
        nb = (length - 1) * batch
        kernel = _ih_kernel(w_ih, s)
        h_prev = out[prev_sl].reshape(nb, s, a, b)
        x_cur = x[cur_sl].reshape(nb, s, a, b)

        # Recompute every gate at once: no sequential dependency given the saved output.
        gi = F.conv2d(h_prev, kernel, b_ih, padding=1)
        gh = _prior_term(x_cur, w_hh, b_hh)
        rz = torch.sigmoid_(gi[:, : 2 * s].add_(gh[:, : 2 * s]))
        r, z = rz[:, :s], rz[:, s:]
        gh_n = gh[:, 2 * s :]
        n = torch.tanh_(gi[:, 2 * s :].addcmul_(r, gh_n))
        # The gate-gradient factors of every plane, batched: d(pre-activation)/dh of r, z, n,
        # stacked in the gate order so that one multiply per plane gives that plane's dgi.
        factors = torch.empty(nb, 3, s, a, b, dtype=dtype, device=x.device)
        f_r, f_z, f_n = factors.unbind(1)
        torch.mul(z, 1 - n * n, out=f_n)  # through n = tanh(.)
        torch.mul(n - (h_prev if line else x_cur), z * (1 - z), out=f_z)  # through z = sigmoid(.)
        torch.mul(f_n * gh_n, r * (1 - r), out=f_r)  # through r = sigmoid(.)
        keep = 1 - z  # the kept value's direct share of h (the prior's, or the previous plane's)
        r = r.contiguous()
        del gi, gh, rz, z, n, gh_n
        # The transposed convolution, as a plain convolution with the flipped, transposed kernel.
        kernel_t = kernel.transpose(0, 1).flip(2, 3).contiguous()

        dgi = torch.empty(length - 1, batch, 3, s, a, b, dtype=dtype, device=x.device)
        for t in range(length - 1, 0, -1):
            cur = first + step * t
            j = cur - 1 if not reverse else cur
            rows = slice(j * batch, (j + 1) * batch)
            torch.mul(dh[cur].unsqueeze(1), factors[rows], out=dgi[j])
            dh[cur - step].add_(F.conv2d(dgi[j].view(batch, 3 * s, a, b), kernel_t, padding=1))
            if line:
                # The kept share flows on to the previous plane (it carries on from there).
                dh[cur - step].addcmul_(dh[cur], keep[rows])
        del factors
        dx[first] = dh[first]
        if line:
            dx[cur_sl].zero_()
        else:
            torch.mul(dh[cur_sl].reshape(nb, s, a, b), keep, out=dx[cur_sl].view(nb, s, a, b))

        dgi_flat = dgi.view(nb, 3 * s, a, b)
        grad_kernel = conv2d_weight(h_prev, kernel.shape, dgi_flat, padding=1)
        d_w_ih = _ih_kernel_grad_to_weight(grad_kernel, s)
        d_b_ih = dgi_flat.sum(dim=(0, 2, 3))
        # The prior-term gate gradients equal the neighbour-term ones except for n: dn_h = dn_i * r.
        dgh = dgi_flat
        dgh[:, 2 * s :] *= r
        dgh3 = dgh.view(nb, 3 * s, a * b)
        d_w_hh = torch.bmm(dgh3, x_cur.view(nb, s, a * b).transpose(1, 2)).sum(0)
        d_b_hh = dgh3.sum(dim=(0, 2))
        dx_cur = dx[cur_sl].view(nb, s, a * b)
        torch.baddbmm(dx_cur, w_hh.t().expand(nb, s, 3 * s), dgh3, out=dx_cur)
        grads = (dx, d_w_ih, d_w_hh, d_b_ih, d_b_hh)
    return grads


class _FusedPlaneSweep(torch.autograd.Function):
    """Sweep plane-major ``xp: (L, B, S, A, Bb)`` along dim 0 (backwards when ``reverse``).

    Returns the swept states in the compute dtype, plane-major and contiguous.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xp: torch.Tensor,
        weight_ih: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_ih: torch.Tensor,
        bias_hh: torch.Tensor,
        reverse: bool,
        carry: str = "prior",
    ) -> torch.Tensor:
        out = plane_forward(xp, weight_ih, weight_hh, bias_ih, bias_hh, reverse, carry)
        ctx.reverse = reverse
        ctx.carry = carry
        ctx.save_for_backward(xp, weight_ih, weight_hh, bias_ih, bias_hh, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        xp, weight_ih, weight_hh, bias_ih, bias_hh, out = ctx.saved_tensors
        grads = plane_backward(grad_out, xp, weight_ih, weight_hh, bias_ih, bias_hh, out, ctx.reverse, ctx.carry)
        needs = ctx.needs_input_grad
        originals = (xp, weight_ih, weight_hh, bias_ih, bias_hh)
        result = tuple(
            g.to(o.dtype) if need else None for g, o, need in zip(grads, originals, needs[:5])
        )
        return result + (None, None)


def fused_directional_gru_scan3d(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x: (B, S, D, H, W)`` in ``direction`` (a canonical 3D name). Inputs are validated by the caller.

    Gates are computed in float32 (float64 when any operand is float64); the result has
    ``x.dtype``. Differentiable once (no double backward).
    """
    dim, reverse = sweep_dim(direction, x.dim())
    # The plane-major view is free; the function copies it into a contiguous buffer itself.
    y = _FusedPlaneSweep.apply(x.movedim(dim, 0), weight_ih, weight_hh, bias_ih, bias_hh, reverse, carry)
    return y.movedim(0, dim).to(x.dtype)
