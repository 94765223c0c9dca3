"""The Triton directional GRU scan: one fused kernel per line, forward and backward.

Same maths as :mod:`spatialrec.ops.reference` (``DESIGN.md``). Imported lazily by
:func:`spatialrec.ops.directional_gru_scan`; needs ``pip install 'spatialrec[triton]'``. It runs
on CUDA tensors, and on CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1``,
set before this module is imported), which the tests use.

Design. Every direction is the `down` sweep of a view; inside, everything is line-major with one
zero column on each side of a line: priors, states, gradients are ``(H, B, W + 2, S)`` (``R = B *
(W + 2)`` padded rows per line). With that padding the neighbour vector of column ``j`` is the
``3S`` consecutive values of the previous line starting at padded column ``j``, so the kernels
read it straight from the state buffer (no neighbour copy, no concatenation), and the padding
rows turn the weight gradients into plain GEMMs over all lines.

- Prior term, once: ``W_hh p + b_hh (+ b_ih for r, z)`` for all lines, one cuBLAS GEMM.
- Forward, per line: ``_fwd_line`` computes ``a W_ih^T`` for an ``(BLOCK_M rows, BLOCK_N
  state channels)`` tile of all three gates (three ``tl.dot`` accumulators over ``K = 3S``) and
  applies the gate arithmetic in the epilogue, writing the new line into the state buffer. The
  line is the unit of synchronisation: kernel boundaries order the lines.
- Backward, per line from the last: ``_bwd_gates_line`` recomputes the gates the same way and
  writes the gate gradients ``[dn | dr dz | dn * r]`` and the direct prior gradient ``dh (1 - z)``;
  ``_bwd_prev_line`` pushes the gradient to the previous line, ``sum_k D[j + 1 - k] W_ih[:, k]``
  over the three neighbour slots, as one GEMM-like kernel with the shifted rows read directly.
- After the loop, off the critical path: ``dx += D_h W_hh``, ``dW_hh``, ``dW_ih`` (three shifted
  GEMMs over all lines at once, thanks to the padding) and the bias sums, by cuBLAS.

Why per-line kernels and not a persistent kernel: a persistent kernel needs a grid-wide barrier
between lines, which Triton does not offer portably (and which the interpreter cannot run);
per-line launches are ~H launches per sweep in the forward and 2H in the backward, which a
CUDA graph could replay (not done here). GEMM-like tiles use ``input_precision="ieee"`` so float32
results match the reference to ~1e-6 (TF32 would not).

GPU speed: unmeasured in this project so far (no GPU was available when it was written); the
kernels are checked for correctness in the interpreter only.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised only without triton
    raise ImportError("the triton backend needs Triton: pip install 'spatialrec[triton]'") from err

from .directions import from_canonical_view, to_canonical_view
from .gates import compute_dtype, fold_biases, permute_gates_ih, unpermute_gates_ih


@triton.jit
def _gate_dots(prev_ptr, wt_ptr, rows_p, mask_m, offs_n, mask_n, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """``a W_ih^T`` for a tile: a's row ``rows_p`` (padded index of column j) starts at ``(rows_p - 1) * S``."""
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_z = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_r.dtype)
    acc_n = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_r.dtype)
    offs_k = tl.arange(0, BLOCK_K)
    a_base = (rows_p - 1) * S
    for k0 in range(0, 3 * S, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < 3 * S
        a = tl.load(prev_ptr + a_base[:, None] + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w_off = kk[:, None] * (3 * S) + offs_n[None, :]
        w_mask = mask_k[:, None] & mask_n[None, :]
        w_r = tl.load(wt_ptr + w_off, mask=w_mask, other=0.0)
        w_z = tl.load(wt_ptr + w_off + S, mask=w_mask, other=0.0)
        w_n = tl.load(wt_ptr + w_off + 2 * S, mask=w_mask, other=0.0)
        acc_r += tl.dot(a, w_r, input_precision="ieee")
        acc_z += tl.dot(a, w_z, input_precision="ieee")
        acc_n += tl.dot(a, w_n, input_precision="ieee")
    return acc_r, acc_z, acc_n


@triton.jit
def _tanh(x):
    # 2 sigmoid(2x) - 1, written with the stable sigmoid: portable to every Triton target.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _fwd_line(prev_ptr, out_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, M, W, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """One line: ``out[rows] = p + z (n - p)``. Pointers are to line starts in padded layouts."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < S
    rows_p = (offs_m // W) * (W + 2) + (offs_m % W) + 1
    acc_r, acc_z, acc_n = _gate_dots(prev_ptr, wt_ptr, rows_p, mask_m, offs_n, mask_n, S, BLOCK_M, BLOCK_N, BLOCK_K, ACC)
    mask = mask_m[:, None] & mask_n[None, :]
    gh_off = rows_p[:, None] * (3 * S) + offs_n[None, :]
    gh_r = tl.load(gh_ptr + gh_off, mask=mask, other=0.0)
    gh_z = tl.load(gh_ptr + gh_off + S, mask=mask, other=0.0)
    gh_n = tl.load(gh_ptr + gh_off + 2 * S, mask=mask, other=0.0)
    b_n = tl.load(bn_ptr + offs_n, mask=mask_n, other=0.0)
    r = tl.sigmoid(acc_r + gh_r)
    z = tl.sigmoid(acc_z + gh_z)
    n = _tanh(acc_n + b_n[None, :] + r * gh_n)
    s_off = rows_p[:, None] * S + offs_n[None, :]
    p = tl.load(x_ptr + s_off, mask=mask, other=0.0)
    tl.store(out_ptr + s_off, p + z * (n - p), mask=mask)


@triton.jit
def _bwd_gates_line(prev_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, dh_ptr, d_ptr, dxd_ptr, M, W, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """One line's gate gradients ``d = [dn | dr dz | dn r]`` (rows of 4S) and ``dxd = dh (1 - z)``."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < S
    rows_p = (offs_m // W) * (W + 2) + (offs_m % W) + 1
    acc_r, acc_z, acc_n = _gate_dots(prev_ptr, wt_ptr, rows_p, mask_m, offs_n, mask_n, S, BLOCK_M, BLOCK_N, BLOCK_K, ACC)
    mask = mask_m[:, None] & mask_n[None, :]
    gh_off = rows_p[:, None] * (3 * S) + offs_n[None, :]
    gh_r = tl.load(gh_ptr + gh_off, mask=mask, other=0.0)
    gh_z = tl.load(gh_ptr + gh_off + S, mask=mask, other=0.0)
    gh_n = tl.load(gh_ptr + gh_off + 2 * S, mask=mask, other=0.0)
    b_n = tl.load(bn_ptr + offs_n, mask=mask_n, other=0.0)
    r = tl.sigmoid(acc_r + gh_r)
    z = tl.sigmoid(acc_z + gh_z)
    n = _tanh(acc_n + b_n[None, :] + r * gh_n)
    s_off = rows_p[:, None] * S + offs_n[None, :]
    p = tl.load(x_ptr + s_off, mask=mask, other=0.0)
    dh = tl.load(dh_ptr + s_off, mask=mask, other=0.0)
    dz = dh * (n - p) * z * (1.0 - z)
    dn = dh * z * (1.0 - n * n)
    dr = dn * gh_n * r * (1.0 - r)
    d_off = rows_p[:, None] * (4 * S) + offs_n[None, :]
    tl.store(d_ptr + d_off, dn, mask=mask)
    tl.store(d_ptr + d_off + S, dr, mask=mask)
    tl.store(d_ptr + d_off + 2 * S, dz, mask=mask)
    tl.store(d_ptr + d_off + 3 * S, dn * r, mask=mask)
    tl.store(dxd_ptr + s_off, dh * (1.0 - z), mask=mask)


@triton.jit
def _bwd_prev_line(d_ptr, w_ptr, dprev_ptr, M, W, S, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """``dprev[q] += sum_k D[q + 1 - k, :3S] W_ih_perm[:, kS:(k+1)S]`` (padded rows; pads of D are zero)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < S
    rows_p = (offs_m // W) * (W + 2) + (offs_m % W) + 1
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for slot in range(3):
        # Column q was slot `slot` of the neighbour vector of column q + 1 - slot.
        src_rows = rows_p + 1 - slot
        for k0 in range(0, 3 * S, BLOCK_K):
            kk = k0 + offs_k
            mask_k = kk < 3 * S
            dg = tl.load(d_ptr + src_rows[:, None] * (4 * S) + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_ptr + kk[:, None] * (3 * S) + slot * S + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc += tl.dot(dg, w, input_precision="ieee")
    mask = mask_m[:, None] & mask_n[None, :]
    off = rows_p[:, None] * S + offs_n[None, :]
    old = tl.load(dprev_ptr + off, mask=mask, other=0.0)
    tl.store(dprev_ptr + off, old + acc, mask=mask)


def _blocks(m: int, s: int) -> tuple[int, int, int]:
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    block_n = min(64, max(16, triton.next_power_of_2(s)))
    block_k = min(32, max(16, triton.next_power_of_2(3 * s)))
    return block_m, block_n, block_k


def _acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_device(x: torch.Tensor) -> None:
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(
            f"the triton backend needs CUDA tensors, got x on {x.device}; use backend='fused' on the CPU "
            "(CPU tensors run only under the Triton interpreter, TRITON_INTERPRET=1, for tests)"
        )


def _padded_lines(x: torch.Tensor, direction: str, dtype: torch.dtype) -> torch.Tensor:
    """``x: (B, S, H, W)`` -> `down` view in line-major padded ``(H, B, W + 2, S)`` (zero pad columns)."""
    v = to_canonical_view(x, direction)
    b, s, h, w = v.shape
    out = torch.empty((h, b, w + 2, s), dtype=dtype, device=x.device)
    out[:, :, 0].zero_()
    out[:, :, -1].zero_()
    out[:, :, 1:-1].copy_(v.permute(2, 0, 3, 1))
    return out


def _from_padded(lines: torch.Tensor, direction: str, dtype: torch.dtype) -> torch.Tensor:
    v = from_canonical_view(lines[:, :, 1:-1].permute(1, 3, 0, 2), direction)
    return v.to(dtype=dtype, memory_format=torch.contiguous_format)


class _Params:
    def __init__(self, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, dtype: torch.dtype) -> None:
        s = weight_hh.shape[1]
        self.s = s
        w_ih = weight_ih.detach().to(dtype)
        self.w_ih_t = w_ih.t().contiguous()  # (3S in, 3S out) gate order r, z, n along columns
        self.w_ih_perm = permute_gates_ih(w_ih, s).contiguous()  # rows n, r, z
        self.w_hh = weight_hh.detach().to(dtype).contiguous()
        self.b_prior, self.b_ih_n = fold_biases(bias_ih.detach().to(dtype), bias_hh.detach().to(dtype), s)

    def prior(self, xp: torch.Tensor) -> torch.Tensor:
        """``xp: (H, B, W + 2, S)`` -> ``(H, B, W + 2, 3S)`` prior term, one GEMM."""
        h, b, wp2, s = xp.shape
        return torch.addmm(self.b_prior, xp.view(-1, s), self.w_hh.t()).view(h, b, wp2, 3 * s)


def _forward(x: torch.Tensor, params: _Params, direction: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    xp = _padded_lines(x, direction, dtype)
    h, b, wp2, s = xp.shape
    w, m = wp2 - 2, b * (wp2 - 2)
    states = torch.empty_like(xp)
    states[:, :, 0].zero_()
    states[:, :, -1].zero_()
    states[0].copy_(xp[0])
    if h > 1:
        gh = params.prior(xp)
        bm, bn, bk = _blocks(m, s)
        grid = (triton.cdiv(m, bm), triton.cdiv(s, bn))
        for i in range(1, h):
            _fwd_line[grid](states[i - 1], states[i], gh[i], xp[i], params.w_ih_t, params.b_ih_n, m, w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACC=_acc(dtype))
    return _from_padded(states, direction, x.dtype), states


def _backward(grad_y: torch.Tensor, x: torch.Tensor, states: torch.Tensor, params: _Params, direction: str, dtype: torch.dtype, need_params: bool) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, ...]]]:
    """Returns ``dx (H, B, W + 2, S)`` and, if asked, ``(dW_ih_perm, dW_hh, db_ih_perm, db_hh)``."""
    dh = _padded_lines(grad_y, direction, dtype)  # accumulates dL/dh line by line
    h, b, wp2, s = dh.shape
    w, m = wp2 - 2, b * (wp2 - 2)
    dx = torch.zeros_like(dh)
    grads = None
    if h == 1:
        dx.copy_(dh)
        if need_params:
            grads = (
                torch.zeros((3 * s, 3 * s), dtype=dtype, device=x.device),
                torch.zeros((3 * s, s), dtype=dtype, device=x.device),
                torch.zeros((3 * s,), dtype=dtype, device=x.device),
                torch.zeros((3 * s,), dtype=dtype, device=x.device),
            )
        return dx, grads
    xp = _padded_lines(x, direction, dtype)
    gh = params.prior(xp)
    d = torch.zeros((h, b, wp2, 4 * s), dtype=dtype, device=x.device)  # pad rows stay zero
    bm, bn, bk = _blocks(m, s)
    grid = (triton.cdiv(m, bm), triton.cdiv(s, bn))
    for i in range(h - 1, 0, -1):
        _bwd_gates_line[grid](states[i - 1], gh[i], xp[i], params.w_ih_t, params.b_ih_n, dh[i], d[i], dx[i], m, w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACC=_acc(dtype))
        _bwd_prev_line[grid](d[i], params.w_ih_perm, dh[i - 1], m, w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACC=_acc(dtype))
    dx[0].copy_(dh[0])
    d_flat = d[1:].view(-1, 4 * s)
    d_h = d_flat[:, s:]  # (R, 3S) prior-side gate gradients, order r, z, n
    dx[1:].view(-1, s).addmm_(d_h, params.w_hh)
    dx[:, :, 0].zero_()
    dx[:, :, -1].zero_()
    if need_params:
        d_i = d_flat[:, : 3 * s]  # input-side gate gradients, order n, r, z
        h_flat = states[:-1].reshape(-1, s)
        rows = d_flat.shape[0]
        dw_ih = torch.empty((3 * s, 3 * s), dtype=dtype, device=x.device)
        for k in range(3):
            # Padded row r of a line read padded row r - 1 + k of the previous line in slot k.
            torch.mm(d_i[1 : rows - 1].t(), h_flat[k : rows - 2 + k], out=dw_ih[:, k * s : (k + 1) * s])
        dw_hh = d_h.t() @ xp[1:].reshape(-1, s)
        grads = (dw_ih, dw_hh, d_i.sum(0), d_h.sum(0))
    return dx, grads


class TritonDirectionalGRUScan(torch.autograd.Function):
    """Autograd function of the Triton scan; call it through :func:`triton_directional_gru_scan`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, direction: str) -> torch.Tensor:  # type: ignore[override]
        dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
        y, states = _forward(x, _Params(weight_ih, weight_hh, bias_ih, bias_hh, dtype), direction, dtype)
        ctx.save_for_backward(x, weight_ih, weight_hh, bias_ih, bias_hh, states)
        ctx.direction = direction
        ctx.dtype = dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        x, weight_ih, weight_hh, bias_ih, bias_hh, states = ctx.saved_tensors
        need_params = any(ctx.needs_input_grad[1:5])
        if not (ctx.needs_input_grad[0] or need_params):
            return None, None, None, None, None, None
        params = _Params(weight_ih, weight_hh, bias_ih, bias_hh, ctx.dtype)
        s = params.s
        dx, grads = _backward(grad_y.contiguous(), x, states, params, ctx.direction, ctx.dtype, need_params)
        out: list[Optional[torch.Tensor]] = [_from_padded(dx, ctx.direction, x.dtype) if ctx.needs_input_grad[0] else None]
        if grads is None:
            out += [None] * 4
        else:
            dw_ih, dw_hh, db_ih, db_hh = grads
            cand = [
                unpermute_gates_ih(dw_ih, s).to(weight_ih.dtype),
                dw_hh.to(weight_hh.dtype),
                unpermute_gates_ih(db_ih, s).to(bias_ih.dtype),
                db_hh.to(bias_hh.dtype),
            ]
            out += [g if need else None for g, need in zip(cand, ctx.needs_input_grad[1:5])]
        return (*out, None)


def triton_directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` in ``direction`` (a canonical name) with the Triton kernels.

    Inputs are validated by the caller (:func:`spatialrec.ops.directional_gru_scan`). Weights
    ``weight_ih (3S, 3S)``, ``weight_hh (3S, S)``, biases ``(3S,)``. CUDA tensors (CPU tensors
    only under ``TRITON_INTERPRET=1``). Gates in float32 (float64 when any operand is float64);
    returns ``(B, S, H, W)`` in ``x.dtype``. Differentiable once.

    Raises:
        ValueError: ``x`` is not on a CUDA device and the Triton interpreter is not enabled.
    """
    _check_device(x)
    return TritonDirectionalGRUScan.apply(x, weight_ih, weight_hh, bias_ih, bias_hh, direction)


__all__ = ["TritonDirectionalGRUScan", "triton_directional_gru_scan"]
