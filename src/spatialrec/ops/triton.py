"""The Triton directional GRU scan, 2D and 3D: one fused kernel per line, forward and backward.

Same maths as :mod:`spatialrec.ops.reference` (``docs/maths.md``). Imported lazily by
:func:`spatialrec.ops.directional_gru_scan`; needs ``pip install 'spatialrec[triton]'``. It runs
on CUDA tensors, and on CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1``,
set before this module is imported), which the tests use.

Design. Every direction is the canonical sweep (along dim 2, increasing) of a view; inside,
everything is line-major with one zero position on each side of every remaining axis: priors,
states, gradients are ``(L, B, PA, PB, S)``, where a 2D line ``(W,)`` is ``PA = 1`` row of
``PB = W + 2`` padded columns and a 3D plane ``(A, Bb)`` is ``(A + 2) x (Bb + 2)``. One kernel
set serves both: a position's neighbour in slot ``k`` (normative order,
:func:`spatialrec.ops.directions.neighbour_offsets`) is the padded row ``q + off_k`` of the
previous line, ``off_k = k - 1`` in 2D (3 slots) and ``off_k = (k // 3 - 1) PB + k % 3 - 1`` in
3D (9 slots), so the kernels read neighbours straight from the state buffer (no gather, no
copy) and the zero padding makes every shift branch-free.

- Prior term, once: ``W_hh p + b_hh (+ b_ih for r, z)`` for all lines, one cuBLAS GEMM.
- Forward, per line: ``_fwd_line`` computes ``a W_ih^T`` for an ``(BLOCK_M positions, BLOCK_N
  state channels)`` tile of all three gates (three ``tl.dot`` accumulators over ``K = kS``,
  slot by slot) and applies the gate arithmetic in the epilogue, writing the new line into the
  state buffer. Kernel boundaries order the lines.
- Backward, per line from the last: ``_bwd_gates_line`` recomputes the gates the same way and
  writes the gate gradients ``[dn | dr dz | dn * r]`` and the direct prior gradient
  ``dh (1 - z)``; ``_bwd_prev_line`` pushes the gradient to the previous line,
  ``sum_k D[q - off_k] W_ih[:, kS:(k+1)S]``, reading the shifted rows directly.
- After the loop, off the critical path: ``dx += D_h W_hh``, ``dW_hh``, ``dW_ih`` (one shifted
  GEMM per slot over all lines at once, thanks to the padding) and the bias sums, by cuBLAS.

Precision of the ``tl.dot`` tiles (:func:`dot_mode`): float32 inputs use ``"ieee"`` (exact
float32 products, matches the reference to ~1e-6) or TF32 tensor cores, as the
``triton_precision`` option says (:func:`spatialrec.options.get_triton_precision`: by default
``tf32`` exactly when ``torch.get_float32_matmul_precision()`` is ``"high"`` or ``"medium"``;
``SPATIALREC_TRITON_PRECISION`` sets it); bfloat16 / float16 inputs feed the dot with operands rounded to
their own dtype (tensor cores), always accumulating in float32; gate arithmetic and the stored
states are float32 in every mode. float64 inputs use float64 throughout.

Block shapes and warps (:func:`launch_config`) are chosen per state size, dot mode and kernel;
every configuration the launcher can choose is compiled ahead of time for sm_80/sm_90/sm_100 by
:mod:`spatialrec.ops.aot` (CPU only, in CI, under Triton 3.8 and 3.9), which checks shared
memory, register headroom and spills.

Why per-line kernels and not a persistent kernel: see ``docs/kernels.md`` (launch overhead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised only without triton
    raise ImportError("the triton backend needs Triton: pip install 'spatialrec[triton]'") from err

from .. import options
from .directions import from_canonical_view, to_canonical_view
from .gates import compute_dtype, fold_biases, permute_gates_ih, unpermute_gates_ih

PRECISION_ENV_VAR = options.ENV_VARS["triton_precision"]
"""Environment variable the ``triton_precision`` option defaults from: ``auto`` (follow
``torch.get_float32_matmul_precision()``), ``ieee`` (exact float32) or ``tf32`` (TF32 tensor
cores), for float32 inputs."""

# Dot modes (a constexpr of every kernel).
IEEE, TF32, BF16, FP16, BF16_EMULATED = 0, 1, 2, 3, 4
MODE_NAMES = {IEEE: "ieee", TF32: "tf32", BF16: "bf16", FP16: "fp16", BF16_EMULATED: "bf16-emulated"}


@triton.jit
def _dot(a, b, acc, MODE: tl.constexpr):
    if MODE == 1:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    elif MODE == 2:
        acc = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif MODE == 3:
        acc = tl.dot(a.to(tl.float16), b.to(tl.float16), acc)
    elif MODE == 4:
        # bf16 operands, float32 products: the interpreter's own bf16 dot is wrong (Triton 3.9).
        acc += tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    else:
        acc += tl.dot(a, b, input_precision="ieee")
    return acc


@triton.jit
def _tanh(x):
    # 2 sigmoid(2x) - 1, written with the stable sigmoid: portable to every Triton target.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _padded_rows(offs_m, A, Bb, NSLOT: tl.constexpr):
    """Compact position ``m`` of a line (batch, a, b) -> its padded row index in ``(B, PA, PB)``."""
    OFF_A: tl.constexpr = NSLOT // 9  # 1 in 3D (A is padded), 0 in 2D (A = 1, unpadded)
    per = A * Bb
    bi = offs_m // per
    rem = offs_m % per
    pb = Bb + 2
    return bi * ((A + 2 * OFF_A) * pb) + (rem // Bb + OFF_A) * pb + rem % Bb + 1


@triton.jit
def _slot_offset(slot, Bb, NSLOT: tl.constexpr):
    """Padded-row offset of neighbour slot ``slot`` (normative, row-major order)."""
    OFF_A: tl.constexpr = NSLOT // 9
    return (slot // 3 - 1) * (Bb + 2) * OFF_A + slot % 3 - 1


@triton.jit
def _gate_dots(prev_ptr, wt_ptr, rows_p, mask_m, offs_n, mask_n, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr):
    """``a W_ih^T`` for a tile, one neighbour slot at a time (``wt``: ``(NSLOT S, 3S)``, gate columns r, z, n)."""
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_z = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_n = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for slot in tl.static_range(NSLOT):
        src = rows_p + _slot_offset(slot, Bb, NSLOT)
        for k0 in range(0, S, BLOCK_K):
            kk = k0 + offs_k
            mask_k = kk < S
            a = tl.load(prev_ptr + src[:, None] * S + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w_off = (slot * S + kk)[:, None] * (3 * S) + offs_n[None, :]
            w_mask = mask_k[:, None] & mask_n[None, :]
            acc_r = _dot(a, tl.load(wt_ptr + w_off, mask=w_mask, other=0.0), acc_r, MODE)
            acc_z = _dot(a, tl.load(wt_ptr + w_off + S, mask=w_mask, other=0.0), acc_z, MODE)
            acc_n = _dot(a, tl.load(wt_ptr + w_off + 2 * S, mask=w_mask, other=0.0), acc_n, MODE)
    return acc_r, acc_z, acc_n


@triton.jit
def _gates(prev_ptr, gh_ptr, wt_ptr, bn_ptr, rows_p, mask_m, offs_n, mask_n, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr):
    """``(r, z, n, W_hn p + b_hn)`` of a tile."""
    acc_r, acc_z, acc_n = _gate_dots(prev_ptr, wt_ptr, rows_p, mask_m, offs_n, mask_n, Bb, S, NSLOT, BLOCK_M, BLOCK_N, BLOCK_K, ACC, MODE)
    mask = mask_m[:, None] & mask_n[None, :]
    gh_off = rows_p[:, None] * (3 * S) + offs_n[None, :]
    gh_r = tl.load(gh_ptr + gh_off, mask=mask, other=0.0)
    gh_z = tl.load(gh_ptr + gh_off + S, mask=mask, other=0.0)
    gh_n = tl.load(gh_ptr + gh_off + 2 * S, mask=mask, other=0.0)
    b_n = tl.load(bn_ptr + offs_n, mask=mask_n, other=0.0)
    r = tl.sigmoid(acc_r + gh_r)
    z = tl.sigmoid(acc_z + gh_z)
    n = _tanh(acc_n + b_n[None, :] + r * gh_n)
    return r, z, n, gh_n


@triton.jit
def _tile(M, A, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's ``(BLOCK_M positions, BLOCK_N state channels)`` tile of a line of ``M``
    positions: ``(offs_n, mask_m, mask_n, rows_p)``, ``rows_p`` the positions' padded rows."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < S
    rows_p = _padded_rows(offs_m, A, Bb, NSLOT)
    return offs_n, mask_m, mask_n, rows_p


@triton.jit
def _line_gates(prev_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, M, A, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr, LINE: tl.constexpr):
    """The gates of this program's tile of a line and what ``(1 - z)`` keeps there:
    ``(r, z, n, W_hn p + b_hn, c, mask, s_off, rows_p, offs_n)``, ``c`` the prior ``p`` or, with
    ``LINE``, the previous line's state at ``q``; ``s_off`` the tile's offsets in ``(rows, S)``."""
    offs_n, mask_m, mask_n, rows_p = _tile(M, A, Bb, S, NSLOT, BLOCK_M, BLOCK_N)
    r, z, n, gh_n = _gates(prev_ptr, gh_ptr, wt_ptr, bn_ptr, rows_p, mask_m, offs_n, mask_n, Bb, S, NSLOT, BLOCK_M, BLOCK_N, BLOCK_K, ACC, MODE)
    mask = mask_m[:, None] & mask_n[None, :]
    s_off = rows_p[:, None] * S + offs_n[None, :]
    if LINE:
        c = tl.load(prev_ptr + s_off, mask=mask, other=0.0)
    else:
        c = tl.load(x_ptr + s_off, mask=mask, other=0.0)
    return r, z, n, gh_n, c, mask, s_off, rows_p, offs_n


@triton.jit
def _fwd_line(prev_ptr, out_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, M, A, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr, LINE: tl.constexpr):
    """One line: ``out[q] = c + z (n - c)``, ``c`` the prior ``p`` or, with ``LINE`` (``carry="line"``),
    the previous line's state at ``q``. Pointers are to line starts in padded layouts."""
    _r, z, n, _gh_n, c, mask, s_off, _rows_p, _offs_n = _line_gates(prev_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, M, A, Bb, S, NSLOT, BLOCK_M, BLOCK_N, BLOCK_K, ACC, MODE, LINE)
    tl.store(out_ptr + s_off, c + z * (n - c), mask=mask)


@triton.jit
def _bwd_gates_line(prev_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, dh_ptr, d_ptr, dxd_ptr, M, A, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr, LINE: tl.constexpr):
    """One line's gate gradients ``d = [dn | dr dz | dn r]`` (rows of 4S) and the kept share
    ``dh (1 - z)``: stored into ``dxd`` (the prior's gradient), or with ``LINE`` added to it (the
    previous line's state gradient, where the carry came from)."""
    r, z, n, gh_n, c, mask, s_off, rows_p, offs_n = _line_gates(prev_ptr, gh_ptr, x_ptr, wt_ptr, bn_ptr, M, A, Bb, S, NSLOT, BLOCK_M, BLOCK_N, BLOCK_K, ACC, MODE, LINE)
    dh = tl.load(dh_ptr + s_off, mask=mask, other=0.0)
    dz = dh * (n - c) * z * (1.0 - z)
    dn = dh * z * (1.0 - n * n)
    dr = dn * gh_n * r * (1.0 - r)
    d_off = rows_p[:, None] * (4 * S) + offs_n[None, :]
    tl.store(d_ptr + d_off, dn, mask=mask)
    tl.store(d_ptr + d_off + S, dr, mask=mask)
    tl.store(d_ptr + d_off + 2 * S, dz, mask=mask)
    tl.store(d_ptr + d_off + 3 * S, dn * r, mask=mask)
    if LINE:
        old = tl.load(dxd_ptr + s_off, mask=mask, other=0.0)
        tl.store(dxd_ptr + s_off, old + dh * (1.0 - z), mask=mask)
    else:
        tl.store(dxd_ptr + s_off, dh * (1.0 - z), mask=mask)


@triton.jit
def _bwd_prev_line(d_ptr, w_ptr, dprev_ptr, M, A, Bb, S, NSLOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, MODE: tl.constexpr):
    """``dprev[q] += sum_k D[q - off_k, :3S] W_ih_perm[:, kS:(k+1)S]`` (padded rows; pads of D are zero)."""
    offs_n, mask_m, mask_n, rows_p = _tile(M, A, Bb, S, NSLOT, BLOCK_M, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    offs_k = tl.arange(0, BLOCK_K)
    for slot in tl.static_range(NSLOT):
        # Position q was slot `slot` of the neighbour vector of position q - off_slot.
        src = rows_p - _slot_offset(slot, Bb, NSLOT)
        for k0 in range(0, 3 * S, BLOCK_K):
            kk = k0 + offs_k
            mask_k = kk < 3 * S
            dg = tl.load(d_ptr + src[:, None] * (4 * S) + kk[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_ptr + kk[:, None] * (NSLOT * S) + slot * S + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = _dot(dg, w, acc, MODE)
    mask = mask_m[:, None] & mask_n[None, :]
    off = rows_p[:, None] * S + offs_n[None, :]
    old = tl.load(dprev_ptr + off, mask=mask, other=0.0)
    tl.store(dprev_ptr + off, old + acc, mask=mask)


KERNELS = {"_fwd_line": _fwd_line, "_bwd_gates_line": _bwd_gates_line, "_bwd_prev_line": _bwd_prev_line}
"""Every kernel the launcher runs, by name (compiled ahead of time by :mod:`spatialrec.ops.aot`)."""

LINE_KERNELS = (_fwd_line, _bwd_gates_line)
"""The kernels with a ``LINE`` constexpr (``carry="line"``), compiled in both variants."""


@dataclass(frozen=True)
class LaunchConfig:
    """Tile shape and launch options of every kernel of one scan."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def dot_mode(x_dtype: torch.dtype, dtype: torch.dtype) -> int:
    """The ``tl.dot`` mode for inputs of ``x_dtype`` computed in ``dtype`` (see the module docstring).

    Raises:
        ValueError: the ``triton_precision`` option is not set and ``SPATIALREC_TRITON_PRECISION``
            is not ``auto``/``ieee``/``tf32``.
    """
    if dtype == torch.float64:
        return IEEE
    if x_dtype == torch.bfloat16:
        # The interpreter (tests) gets the same rounding of the operands with a float32 dot.
        return BF16_EMULATED if _interpreting() else BF16
    if x_dtype == torch.float16:
        return FP16
    return TF32 if options.get_triton_precision() == "tf32" else IEEE


def launch_config(m: int, s: int, mode: int, nslot: int, kernel: str = "_fwd_line") -> LaunchConfig:
    """The tiles of ``kernel`` (a name of :data:`KERNELS`) for a line of ``m`` positions, state size
    ``s``, dot ``mode``, ``nslot`` neighbours. The tile shape is the same for all three kernels of
    a scan; only the number of warps may differ.

    Chosen so that no kernel spills registers or exceeds shared memory on sm_80/sm_90/sm_100,
    with at least :data:`spatialrec.ops.aot.REGISTER_HEADROOM` registers to spare, under every
    Triton the project installs (3.8, which torch 2.14.1 pins, and 3.9; checked by
    :mod:`spatialrec.ops.aot` in CI under both; table in ``docs/kernels.md``). Register pressure,
    not shared memory, is the binding limit: every kernel holds up to three ``BLOCK_M x
    BLOCK_N`` float32 accumulators plus ``BLOCK_K``-deep operand tiles (with their 64-bit
    address tensors) per thread; with ``BLOCK_K = 32`` or two pipeline stages, 64x32 tiles
    already spilled on sm_80 in float32 and bfloat16 alike, 64x32x16 with one stage does not.
    8 warps halve the per-thread share of a tile: with 4 warps the 2D ``_bwd_gates_line`` needed
    254 registers in float32 (Triton 3.9) and spilled 4-20 B under Triton 3.8 (sm_90, sm_100);
    with 8 warps it needs at most 183. The one exception, 16-channel tiles in 3D, keeps 4 warps
    and 64 rows: there ptxas spilled a few bytes at low register counts with 8 warps (sm_80,
    sm_90, sm_100 depending on the Triton) and with 32- or 16-row tiles under Triton 3.8
    (sm_90); 64x16 with 4 warps spills under neither (at most 213 registers), except
    ``_bwd_prev_line``, which gets 8 warps there.
    """
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    block_n = min(32, max(16, triton.next_power_of_2(s)))
    # 3D 16-channel tiles: _bwd_prev_line, whose one accumulator needs few registers, is the
    # kernel where 4 warps spilled (8 B at 96 registers, sm_100, both Triton versions) and 8 do not.
    warps = 4 if nslot > 3 and block_n == 16 and kernel != "_bwd_prev_line" else 8
    return LaunchConfig(block_m, block_n, block_k=16, num_warps=warps, num_stages=1)


def _acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _interpreting() -> bool:
    return options.triton_interpret()


def _check_device(x: torch.Tensor) -> None:
    if not x.is_cuda and not _interpreting():
        raise ValueError(
            f"the triton backend needs CUDA tensors, got x on {x.device}; use backend='fused' on the CPU "
            "(CPU tensors run only under the Triton interpreter, TRITON_INTERPRET=1, for tests)"
        )


@dataclass(frozen=True)
class _Geometry:
    """A line's shape: ``m`` positions, ``a`` x ``bb`` per batch element, ``nslot`` neighbours."""

    m: int
    a: int
    bb: int
    s: int
    nslot: int


def _padded_lines(x: torch.Tensor, direction: str, dtype: torch.dtype) -> torch.Tensor:
    """``x: (B, S, L, *rest)`` oriented -> canonical line-major padded ``(L, B, PA, PB, S)`` (zero pads)."""
    v = to_canonical_view(x, direction)
    b, s, length = v.shape[:3]
    if v.dim() == 4:
        out = torch.zeros((length, b, 1, v.shape[3] + 2, s), dtype=dtype, device=x.device)
        out[:, :, 0, 1:-1].copy_(v.permute(2, 0, 3, 1))
    else:
        out = torch.zeros((length, b, v.shape[3] + 2, v.shape[4] + 2, s), dtype=dtype, device=x.device)
        out[:, :, 1:-1, 1:-1].copy_(v.permute(2, 0, 3, 4, 1))
    return out


def _interior(lines: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    return lines[:, :, 0, 1:-1] if spatial_dims == 2 else lines[:, :, 1:-1, 1:-1]


def _from_padded(lines: torch.Tensor, direction: str, dtype: torch.dtype, spatial_dims: int) -> torch.Tensor:
    inner = _interior(lines, spatial_dims)
    perm = (1, 3, 0, 2) if spatial_dims == 2 else (1, 4, 0, 2, 3)
    v = from_canonical_view(inner.permute(*perm), direction)
    # 2D: channels-last, S innermost as in the states (the ops' output format); 3D: contiguous.
    return v.to(dtype=dtype, memory_format=torch.channels_last if spatial_dims == 2 else torch.contiguous_format)


def _geometry(lines: torch.Tensor, spatial_dims: int) -> _Geometry:
    _, b, pa, pb, s = lines.shape
    a = 1 if spatial_dims == 2 else pa - 2
    return _Geometry(m=b * a * (pb - 2), a=a, bb=pb - 2, s=s, nslot=3 ** (spatial_dims - 1))


class _Params:
    def __init__(self, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, dtype: torch.dtype) -> None:
        s = weight_hh.shape[1]
        self.s = s
        w_ih = weight_ih.detach().to(dtype)
        self.w_ih_t = w_ih.t().contiguous()  # (kS in, 3S out) gate order r, z, n along columns
        self.w_ih_perm = permute_gates_ih(w_ih, s).contiguous()  # (3S, kS) rows n, r, z
        self.w_hh = weight_hh.detach().to(dtype).contiguous()
        self.b_prior, self.b_ih_n = fold_biases(bias_ih.detach().to(dtype), bias_hh.detach().to(dtype), s)

    def prior(self, xp: torch.Tensor) -> torch.Tensor:
        """``xp: (L, B, PA, PB, S)`` -> ``(L, B, PA, PB, 3S)`` prior term, one GEMM."""
        s = xp.shape[-1]
        return torch.addmm(self.b_prior, xp.view(-1, s), self.w_hh.t()).view(*xp.shape[:-1], 3 * s)


def _launch(name: str, geo: _Geometry, mode: int, dtype: torch.dtype, *args: Any, warmup: bool = False, line: bool = False) -> None:
    kernel = globals()[name]  # the module's kernel (as a direct reference would), by its KERNELS name
    cfg = launch_config(geo.m, geo.s, mode, geo.nslot, name)
    grid = (triton.cdiv(geo.m, cfg.block_m), triton.cdiv(geo.s, cfg.block_n))
    call_args = (*args, geo.m, geo.a, geo.bb, geo.s)
    meta = dict(NSLOT=geo.nslot, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, ACC=_acc(dtype), MODE=mode, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if kernel in LINE_KERNELS:
        meta["LINE"] = line
    if warmup:
        kernel.warmup(*call_args, grid=grid, **meta)
    else:
        kernel[grid](*call_args, **meta)


def _forward(x: torch.Tensor, params: _Params, direction: str, dtype: torch.dtype, mode: int, compile_backward: bool, carry: str = "prior") -> tuple[torch.Tensor, torch.Tensor]:
    dims = x.dim() - 2
    xp = _padded_lines(x, direction, dtype)
    geo = _geometry(xp, dims)
    states = torch.empty_like(xp)
    states[0].copy_(xp[0])
    length = xp.shape[0]
    line = carry == "line"
    if length > 1:
        # Pads must be zero: they are the neighbours outside the image.
        states[1:].zero_()
        gh = params.prior(xp)
        for i in range(1, length):
            _launch("_fwd_line", geo, mode, dtype, states[i - 1], states[i], gh[i], xp[i], params.w_ih_t, params.b_ih_n, line=line)
        if compile_backward and not _interpreting():
            # Compile the backward's kernels now, where a failure can still be caught by the
            # dispatcher's fallback, instead of in the middle of autograd's backward pass.
            d = torch.empty((1,), dtype=dtype, device=x.device)
            _launch("_bwd_gates_line", geo, mode, dtype, states[0], gh[1], xp[1], params.w_ih_t, params.b_ih_n, d, d, d, warmup=True, line=line)
            _launch("_bwd_prev_line", geo, mode, dtype, d, params.w_ih_perm, d, warmup=True)
    return _from_padded(states, direction, x.dtype, dims), states


def _backward(grad_y: torch.Tensor, x: torch.Tensor, states: torch.Tensor, params: _Params, direction: str, dtype: torch.dtype, mode: int, need_params: bool, carry: str = "prior") -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, ...]]]:
    """Returns ``dx (L, B, PA, PB, S)`` and, if asked, ``(dW_ih_perm, dW_hh, db_ih_perm, db_hh)``."""
    dims = x.dim() - 2
    dh = _padded_lines(grad_y, direction, dtype)  # accumulates dL/dh line by line
    geo = _geometry(dh, dims)
    s, nslot, length = geo.s, geo.nslot, dh.shape[0]
    dx = torch.zeros_like(dh)
    grads = None
    if length == 1:
        dx.copy_(dh)
        if need_params:
            grads = (
                torch.zeros((3 * s, nslot * s), dtype=dtype, device=x.device),
                torch.zeros((3 * s, s), dtype=dtype, device=x.device),
                torch.zeros((3 * s,), dtype=dtype, device=x.device),
                torch.zeros((3 * s,), dtype=dtype, device=x.device),
            )
        return dx, grads
    xp = _padded_lines(x, direction, dtype)
    gh = params.prior(xp)
    d = torch.zeros((*dh.shape[:-1], 4 * s), dtype=dtype, device=x.device)  # pad rows stay zero
    line = carry == "line"
    for i in range(length - 1, 0, -1):
        # carry="line": the kept share goes to the previous line's gradient (dx[i] stays 0 but
        # for the prior-term part added after the loop).
        kept = dh[i - 1] if line else dx[i]
        _launch("_bwd_gates_line", geo, mode, dtype, states[i - 1], gh[i], xp[i], params.w_ih_t, params.b_ih_n, dh[i], d[i], kept, line=line)
        _launch("_bwd_prev_line", geo, mode, dtype, d[i], params.w_ih_perm, dh[i - 1])
    dx[0].copy_(dh[0])
    d_flat = d[1:].view(-1, 4 * s)
    d_h = d_flat[:, s:]  # (R, 3S) prior-side gate gradients, order r, z, n
    dx[1:].view(-1, s).addmm_(d_h, params.w_hh)
    if need_params:
        d_i = d_flat[:, : 3 * s]  # input-side gate gradients, order n, r, z
        h_flat = states[:-1].reshape(-1, s)
        rows = d_flat.shape[0]
        pb = dh.shape[3]
        reach = pb + 1 if dims == 3 else 1  # largest |offset|: rows closer to the ends are pads
        dw_ih = torch.empty((3 * s, nslot * s), dtype=dtype, device=x.device)
        for k in range(nslot):
            off = ((k // 3 - 1) * pb if dims == 3 else 0) + k % 3 - 1
            # Padded row q of a line read padded row q + off of the previous line in slot k.
            torch.mm(d_i[reach : rows - reach].t(), h_flat[reach + off : rows - reach + off], out=dw_ih[:, k * s : (k + 1) * s])
        dw_hh = d_h.t() @ xp[1:].reshape(-1, s)
        grads = (dw_ih, dw_hh, d_i.sum(0), d_h.sum(0))
    return dx, grads


def sweep_forward(
    x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, direction: str, compile_backward: bool, carry: str = "prior"
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sweep without autograd, for the registered op (:mod:`spatialrec.ops.library`).

    Returns ``y`` (shape and dtype of ``x``; channels-last in 2D, contiguous in 3D) and the padded states ``(L, B, PA, PB,
    S)`` in the compute dtype: all that :func:`sweep_backward` needs besides the inputs. With
    ``compile_backward`` the backward's kernels are compiled now (see :func:`_forward`).
    """
    _check_device(x)
    dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
    params = _Params(weight_ih, weight_hh, bias_ih, bias_hh, dtype)
    return _forward(x, params, direction, dtype, dot_mode(x.dtype, dtype), compile_backward, carry)


def states_to_output(states: torch.Tensor, direction: str, dtype: torch.dtype, spatial_dims: int) -> torch.Tensor:
    """Padded states ``(L, B, PA, PB, S)`` of a ``direction`` sweep -> the sweep's output ``(B, S,
    *spatial)`` in ``dtype``, channels-last in 2D, contiguous in 3D (what :func:`sweep_forward`
    returned, computed again)."""
    return _from_padded(states, direction, dtype, spatial_dims)


def output_to_states(y: torch.Tensor, direction: str, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`states_to_output`: a sweep's output ``(B, S, *spatial)`` -> its padded
    states ``(L, B, PA, PB, S)`` in ``dtype`` (line 0 of a sweep is its prior, unchanged)."""
    return _padded_lines(y, direction, dtype)


def _published_grads(grads: tuple[torch.Tensor, ...], s: int, params: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The gradients :func:`_backward` returns, ``(dW_ih, dW_hh, db_ih, db_hh)`` with the rows of
    ``W_ih`` and ``b_ih`` in the kernels' gate order -> those of ``params`` (``weight_ih,
    weight_hh, bias_ih, bias_hh``) in the published gate order and the parameters' dtypes."""
    dw_ih, dw_hh, db_ih, db_hh = grads
    weight_ih, weight_hh, bias_ih, bias_hh = params
    return [
        unpermute_gates_ih(dw_ih, s).to(weight_ih.dtype),
        dw_hh.to(weight_hh.dtype),
        unpermute_gates_ih(db_ih, s).to(bias_ih.dtype),
        db_hh.to(bias_hh.dtype),
    ]


def sweep_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    states: torch.Tensor,
    direction: str,
    carry: str = "prior",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of :func:`sweep_forward` from its ``states`` (the backward kernels, no recomputed
    forward). Returns ``(dx, d weight_ih, d weight_hh, d bias_ih, d bias_hh)`` in the inputs'
    dtypes, ``dx`` channels-last in 2D, contiguous in 3D."""
    dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
    params = _Params(weight_ih, weight_hh, bias_ih, bias_hh, dtype)
    s, dims = params.s, x.dim() - 2
    dx, grads = _backward(grad_y, x, states, params, direction, dtype, dot_mode(x.dtype, dtype), True, carry)
    assert grads is not None
    dw_ih, dw_hh, db_ih, db_hh = _published_grads(grads, s, (weight_ih, weight_hh, bias_ih, bias_hh))
    return _from_padded(dx, direction, x.dtype, dims), dw_ih, dw_hh, db_ih, db_hh


class TritonDirectionalGRUScan(torch.autograd.Function):
    """Autograd function of the Triton scan; call it through :func:`triton_directional_gru_scan`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, direction: str, carry: str = "prior") -> torch.Tensor:  # type: ignore[override]
        dtype = compute_dtype(x, weight_ih, weight_hh, bias_ih, bias_hh)
        mode = dot_mode(x.dtype, dtype)
        params = _Params(weight_ih, weight_hh, bias_ih, bias_hh, dtype)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight_ih, weight_hh, bias_ih, bias_hh))
        y, states = _forward(x, params, direction, dtype, mode, compile_backward=needs_grad, carry=carry)
        ctx.save_for_backward(x, weight_ih, weight_hh, bias_ih, bias_hh, states)
        ctx.direction = direction
        ctx.carry = carry
        ctx.dtype = dtype
        ctx.mode = mode
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        x, weight_ih, weight_hh, bias_ih, bias_hh, states = ctx.saved_tensors
        need_params = any(ctx.needs_input_grad[1:5])
        if not (ctx.needs_input_grad[0] or need_params):
            return None, None, None, None, None, None, None
        params = _Params(weight_ih, weight_hh, bias_ih, bias_hh, ctx.dtype)
        s = params.s
        dims = x.dim() - 2
        dx, grads = _backward(grad_y, x, states, params, ctx.direction, ctx.dtype, ctx.mode, need_params, ctx.carry)
        out: list[Optional[torch.Tensor]] = [_from_padded(dx, ctx.direction, x.dtype, dims) if ctx.needs_input_grad[0] else None]
        if grads is None:
            out += [None] * 4
        else:
            cand = _published_grads(grads, s, (weight_ih, weight_hh, bias_ih, bias_hh))
            out += [g if need else None for g, need in zip(cand, ctx.needs_input_grad[1:5])]
        return (*out, None, None)


def triton_directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: str,
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` or ``(B, S, D, H, W)`` in ``direction`` (a canonical name) with the Triton kernels.

    Inputs are validated by the caller (:func:`spatialrec.ops.directional_gru_scan`). Weights
    ``weight_ih (3S, 3S)`` (2D) or ``(3S, 9S)`` (3D), ``weight_hh (3S, S)``, biases ``(3S,)``.
    CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``). Gates in float32 (float64 when
    any operand is float64); returns ``x``'s shape in ``x.dtype``. Differentiable once.

    Raises:
        ValueError: ``x`` is not on a CUDA device and the Triton interpreter is not enabled, or
            ``SPATIALREC_TRITON_PRECISION`` is not ``auto``/``ieee``/``tf32``.
    """
    _check_device(x)
    return TritonDirectionalGRUScan.apply(x, weight_ih, weight_hh, bias_ih, bias_hh, direction, carry)


__all__ = [
    "KERNELS",
    "LaunchConfig",
    "PRECISION_ENV_VAR",
    "TritonDirectionalGRUScan",
    "dot_mode",
    "launch_config",
    "output_to_states",
    "states_to_output",
    "sweep_backward",
    "sweep_forward",
    "triton_directional_gru_scan",
]
