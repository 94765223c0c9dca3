"""The scan as registered PyTorch operators: one path for eager and traced code.

Why operators. A traced program (``torch.compile``, ``torch.export``, ONNX) should see the
sweeps as one node with a known output shape, not as the Python loop over lines, the
``as_strided`` views and the in-place BLAS calls of the kernels. ``torch.library.custom_op``
makes the kernels opaque to tracing; a fake (meta) implementation gives the outputs' shapes,
dtypes and strides without running them. Eager code goes through the same operators:
:func:`scan_sequence`, what the layers call, is the one entry point.

Schemas::

    spatialrec::scan_sequence(Tensor x, Tensor[] params, int[] directions, str backend,
                              str carry) -> Tensor
    spatialrec::scan_sequence_forward(Tensor x, Tensor[] params, int[] directions, str backend,
                                      bool keep_gates, str carry) -> (Tensor, Tensor[])
    spatialrec::scan_sequence_backward(Tensor grad, Tensor x, Tensor[] params, Tensor[] saved,
                                       int[] directions, str backend, str carry) -> Tensor[]

``x: (B, S, H, W)`` or ``(B, S, D, H, W)``; ``params`` the four tensors ``weight_ih, weight_hh,
bias_ih, bias_hh`` of each sweep, flattened in sweep order (``4 * len(directions)`` tensors);
``directions`` the numeric codes of :data:`spatialrec.ops.DIRECTIONS` (0 right, 1 left, 2 down,
3 up, 4 in, 5 out); ``backend`` a name accepted by :func:`spatialrec.ops.resolve_backend`
(``"auto"`` is resolved inside the ops, on the real tensor, so no environment lookup or import
happens in a traced region); ``carry`` the cell of every sweep, ``"prior"`` (published) or
``"line"`` (:data:`spatialrec.ops.gates.CARRIES`), a required last argument of every op, passed
to the backend's forward and to its backward from the saved states. With ``carry="line"`` the
saved states suffice too: the backward's kept share reads the previous line's (plane's) state,
which every backward below already reads for the neighbour term.

Two forward operators, because what a forward keeps depends on whether a backward follows:

- ``scan_sequence`` keeps nothing: inference, ``torch.export`` and ONNX (the ONNX translation,
  :func:`spatialrec.export.onnx_scan_sequence`, is registered for it). Differentiating it raises.
- ``scan_sequence_forward`` returns the output and ``saved``, what the backend's own backward
  needs (below); its autograd registration (``register_autograd`` with ``setup_context``) saves
  the inputs and ``saved`` and runs ``scan_sequence_backward``, itself an operator with a fake,
  so a compiled backward is one node too.

What ``saved`` holds, per sweep ``k`` (compute dtype: float32, float64 for float64 operands;
``L_k`` the length of the swept axis, the remaining axes in increasing order, each padded by one
zero position on both sides where marked ``+ 2``):

- ``fused`` 2D: the swept states ``(L_k, B, W'_k + 2, S)`` and, with ``keep_gates``, the gates
  ``[n | r | z]`` ``(L_k - 1, B W'_k, 3S)``; the backward is the hand-written one of
  :mod:`spatialrec.ops.fused` (gates recomputed from the states only when none were kept).
- ``fused`` 3D: the swept states, plane-major ``(L_k, B, S, A, Bb)``; the hand-written backward
  of :mod:`spatialrec.ops.fused3d` (it recomputes the gates of all planes at once by design).
- ``triton``: the padded states ``(L_k, B, PA, PB, S)`` (``PA = 1`` in 2D); the backward
  kernels of :mod:`spatialrec.ops.triton`.
- ``reference``: nothing; the backward differentiates the reference forward with
  ``torch.func.vjp``, a recomputation (acceptable for the readable ground truth only).

A sweep's input, which its backward also needs, is the previous sweep's output: it is recomputed
from that sweep's saved states by a layout copy, not saved again. The backward holds every
sweep's saved tensors until it returns (one autograd node per layer; the autograd functions of
the fused backends, :func:`spatialrec.ops.directional_gru_scan_sequence`, free each sweep's
states after its own backward).

Gates are kept (``keep_gates``) only where a backward can follow and not while ``torch.jit.trace``
records (its check re-runs the call without grad), and ``SPATIALREC_FUSED_GATES`` does not say
``recompute``: :func:`scan_sequence` decides, outside the op, so that a compiled graph fixes it.

The outputs ``y`` and ``dx`` have the inputs' shapes and dtypes and a memory format fixed by the
input's rank alone (:func:`output_format`: channels-last in 2D, where every backend keeps ``S``
innermost, contiguous in 3D), whatever the input's strides; parameter gradients are contiguous.
Channels-last 2D outputs save a transposing copy each way (measured with
``benchmarks/bench_scan.py``, see docs/kernels.md) and let the layer project out with GEMMs.
The format never follows the input's strides: an output whose strides did would be wrong under inductor, which may
give the op an input in another layout than the traced graph had (channels-last convolution
outputs on the CPU) and then, with dynamic shapes, re-strides a saved activation with the first
size's integer strides, so the backward read the op's output with the wrong strides at every
later size (silently wrong gradients, found on ``sdn_unet_pp``).

Triton under ``"auto"``: the layout of ``saved`` is the one of the backend ``"auto"`` picks
before any Triton failure (what a compiled graph's fake declared). When a Triton kernel fails,
the fused backend runs instead (one warning, see :func:`spatialrec.ops.resolve_backend`) and its
states are handed over in Triton's layout (2D: the same buffer; 3D: one layout copy), and the
backward converts them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, cast

import torch

from . import fused3d
from .directions import DIRECTIONS, normalize_directions, sweep_dim
from .fused import save_gates
from .fused import sequence_backward as fused_sequence_backward
from .fused import sequence_forward as fused_sequence_forward
from .gates import check_carry, compute_dtype
from .reference import reference_directional_gru_scan
from .scan import ScanParams, _auto_without_override, _run_triton_or_fallback, resolve_backend, triton_device, triton_available
from .validation import check_scan_inputs

__all__ = ["directions_to_codes", "output_format", "scan_sequence", "scan_sequence_op"]

Tensors = list[torch.Tensor]


def directions_to_codes(directions: Sequence[str]) -> list[int]:
    """Canonical direction names -> their numeric codes (positions in :data:`DIRECTIONS`)."""
    return [DIRECTIONS.index(d) for d in directions]


def _unflatten(params: Sequence[torch.Tensor]) -> list[ScanParams]:
    return [(params[i], params[i + 1], params[i + 2], params[i + 3]) for i in range(0, len(params), 4)]


def _names(directions: Sequence[int]) -> tuple[str, ...]:
    return tuple(DIRECTIONS[d] for d in directions)


def output_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format of the ops' outputs for an input like ``x`` (what the fakes declare):
    channels-last in 2D, the layout every 2D backend keeps its states in (``S`` innermost), so
    that writing the output is a copy of ``S``-long runs; contiguous in 3D (the fused 3D
    backend's planes are ``(B, S, A, B')``). A rule of the input's rank alone, never of its
    strides: see the module docstring."""
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


def _empty_like_output(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_format(x))


def _fresh(y: torch.Tensor, fmt: torch.memory_format, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """``y`` in memory format ``fmt``, sharing no memory with ``others`` (an op's outputs may alias
    neither its inputs nor each other): ``y`` itself where it already is, else a copy."""
    ptrs = {t.untyped_storage().data_ptr() for t in others}
    if y.is_contiguous(memory_format=fmt) and y.untyped_storage().data_ptr() not in ptrs:
        return y
    return y.clone(memory_format=fmt)


def _in_output_format(x: torch.Tensor, y: torch.Tensor, others: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """``y`` (shape of ``x``) in :func:`output_format`, sharing no memory with ``x`` or ``others``."""
    return _fresh(y, output_format(x), (x, *others))


def _param_grad(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient, contiguous and not aliasing ``p``."""
    return _fresh(g, torch.contiguous_format, (p,))


def _validate(x: torch.Tensor, params: Sequence[torch.Tensor], directions: Sequence[int]) -> None:
    """The checks of :func:`spatialrec.ops.directional_gru_scan_sequence`, for direct calls of the ops."""
    if len(params) != 4 * len(directions):
        raise ValueError(f"params has {len(params)} tensors for {len(directions)} directions; expected 4 per direction (weight_ih, weight_hh, bias_ih, bias_hh)")
    normalize_directions(list(directions), x.dim() - 2 if x.dim() in (4, 5) else 2)
    for p in _unflatten(params):
        check_scan_inputs(x, *p)


def _layout_backend(backend: str, x: torch.Tensor) -> str:
    """The backend whose ``saved`` layout the ops use for ``x``: :func:`resolve_backend`'s choice,
    except that a Triton failure earlier in this process does not change it (the fallback then
    hands its states over in Triton's layout)."""
    name = resolve_backend(backend, x)
    if name == "fused" and _auto_without_override(backend) and triton_device(x) and triton_available():
        return "triton"
    return name


def _triton_module() -> Any:
    from . import triton as mod  # imported on first use, as by the dispatcher

    return mod


# ------------------------------------------------------------------------------ forward, per backend


def _reference_forward(x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], carry: str) -> torch.Tensor:
    for p, d in zip(params, names):
        x = reference_directional_gru_scan(x, *p, d, carry=carry)
    return x


def _fused3d_forward(x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], save: bool, carry: str) -> tuple[torch.Tensor, Tensors]:
    saved: Tensors = []
    y = x
    for p, d in zip(params, names):
        dim, reverse = sweep_dim(d, x.dim())
        out = fused3d.plane_forward(y.movedim(dim, 0), *p, reverse, carry)
        if save:
            saved.append(out)
        y = out.movedim(0, dim).to(x.dtype)
    # The op puts y in its output format, apart from x and the saved planes (_in_output_format).
    return y, saved


def _triton_forward(x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], save: bool, keep_gates: bool, carry: str) -> tuple[torch.Tensor, Tensors]:
    mod = _triton_module()
    saved: Tensors = []
    y = x
    for p, d in zip(params, names):
        y, states = mod.sweep_forward(y, *p, d, compile_backward=save, carry=carry)
        if save:
            saved.append(states)
    return y, saved


def _fused_forward_in_triton_layout(x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], save: bool, keep_gates: bool, carry: str) -> tuple[torch.Tensor, Tensors]:
    """The fused backend, its states handed over in the Triton layout (after a Triton failure)."""
    if x.dim() == 4:
        y, saved = fused_sequence_forward(x, params, names, save, keep_gates=False, carry=carry)
        return y, [s.unsqueeze(2) for s in saved]  # (L, B, PB, S) is Triton's (L, B, 1, PB, S)
    y, outs = _fused3d_forward(x, params, names, save, carry)
    mod = _triton_module()
    saved = [mod.output_to_states(out.movedim(0, sweep_dim(d, x.dim())[0]), d, out.dtype) for out, d in zip(outs, names)]
    return y, saved


def _forward(x: torch.Tensor, flat: Tensors, directions: Sequence[int], backend: str, save: bool, keep_gates: bool, carry: str) -> tuple[torch.Tensor, Tensors]:
    """``(y, saved)`` of the sequence (``saved`` empty without ``save``), see the module docstring."""
    _validate(x, flat, directions)
    check_carry(carry)
    params, names = _unflatten(flat), _names(directions)
    layout = _layout_backend(backend, x)
    # The gate precision is the op's business, not autocast's (custom ops run inside autocast).
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        if layout == "reference":
            return _reference_forward(x, params, names, carry), []
        if layout == "fused":
            if x.dim() == 4:
                return fused_sequence_forward(x, params, names, save, keep_gates, carry)
            return _fused3d_forward(x, params, names, save, carry)
        args = (x, params, names, save, keep_gates, carry)
        if resolve_backend(backend, x) == "fused":  # "auto" after a Triton failure
            return _fused_forward_in_triton_layout(*args)
        if _auto_without_override(backend):
            # The dispatcher's one-time warning and failure record; its type says one tensor.
            result: Any = _run_triton_or_fallback(_triton_forward, _fused_forward_in_triton_layout, args)  # type: ignore[arg-type]
            return cast(tuple[torch.Tensor, Tensors], result)
        return _triton_forward(*args)


# ------------------------------------------------------------------------------ backward, per backend


def _reference_backward(grad: torch.Tensor, x: torch.Tensor, flat: Tensors, names: tuple[str, ...], carry: str) -> Tensors:
    def forward(x: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return _reference_forward(x, _unflatten(flat), names, carry)

    # torch.func builds its own autograd level, so this works inside an op implementation (where
    # the dispatcher's autograd keys are excluded) without private dispatcher API.
    with torch.enable_grad():
        _, vjp, *_ = torch.func.vjp(forward, x, *flat)
        return list(vjp(grad))


def _fused3d_backward(grad: torch.Tensor, x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], saved: Tensors, carry: str) -> Tensors:
    inputs = [x] + [out.movedim(0, sweep_dim(d, x.dim())[0]).to(x.dtype) for out, d in zip(saved[:-1], names[:-1])]
    g = grad
    grads: list[Tensors] = []
    for k in range(len(names) - 1, -1, -1):
        dim, reverse = sweep_dim(names[k], x.dim())
        dxp, *dp = fused3d.plane_backward(g.movedim(dim, 0), inputs[k].movedim(dim, 0), *params[k], saved[k], reverse, carry)
        grads.append([t.to(p.dtype) for t, p in zip(dp, params[k])])
        g = dxp.movedim(0, dim).to(x.dtype)
    return [g] + [t for gk in reversed(grads) for t in gk]


def _triton_backward(grad: torch.Tensor, x: torch.Tensor, params: list[ScanParams], names: tuple[str, ...], saved: Tensors, carry: str) -> Tensors:
    mod = _triton_module()
    dims = x.dim() - 2
    inputs = [x] + [mod.states_to_output(s, d, x.dtype, dims) for s, d in zip(saved[:-1], names[:-1])]
    g = grad
    grads: list[Tensors] = []
    for k in range(len(names) - 1, -1, -1):
        g, *dp = mod.sweep_backward(g, inputs[k], *params[k], saved[k], names[k], carry)
        grads.append(dp)
    return [g] + [t for gk in reversed(grads) for t in gk]


def _from_triton_layout(x: torch.Tensor, names: tuple[str, ...], saved: Tensors) -> Tensors:
    """Triton-layout states -> the fused backend's (the backward after a Triton failure)."""
    if x.dim() == 4:
        return [s.squeeze(2) for s in saved]
    mod = _triton_module()
    return [mod.states_to_output(s, d, s.dtype, 3).movedim(sweep_dim(d, x.dim())[0], 0).contiguous() for s, d in zip(saved, names)]


def _backward(grad: torch.Tensor, x: torch.Tensor, flat: Tensors, saved: Tensors, directions: Sequence[int], backend: str, carry: str) -> Tensors:
    """``[dx, d params...]`` from what :func:`_forward` saved, with each backend's own backward."""
    check_carry(carry)
    params, names = _unflatten(flat), _names(directions)
    layout = _layout_backend(backend, x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        if layout == "reference":
            return _reference_backward(grad, x, flat, names, carry)
        with torch.no_grad():
            if layout == "triton" and resolve_backend(backend, x) == "fused":
                layout, saved = "fused", _from_triton_layout(x, names, saved)
            if layout == "triton":
                return _triton_backward(grad, x, params, names, saved, carry)
            if x.dim() == 4:
                dx, dp = fused_sequence_backward(grad, x, params, names, saved, carry)
                return [dx] + dp
            return _fused3d_backward(grad, x, params, names, saved, carry)


def _saved_fakes(x: torch.Tensor, flat: Tensors, directions: Sequence[int], backend: str, keep_gates: bool) -> Tensors:
    """Empty tensors of the shapes, dtype and strides :func:`_forward` saves (see the module docstring)."""
    layout = _layout_backend(backend, x)
    if layout == "reference":
        return []
    dtype = compute_dtype(x, *flat)
    b, s = x.shape[:2]
    out: Tensors = []
    for d in _names(directions):
        dim, _ = sweep_dim(d, x.dim())
        length = x.shape[dim]
        rest = [x.shape[i] for i in range(2, x.dim()) if i != dim]
        if layout == "triton":
            pa = 1 if len(rest) == 1 else rest[0] + 2
            shape: list[Any] = [length, b, pa, rest[-1] + 2, s]
        elif len(rest) == 1:
            shape = [length, b, rest[0] + 2, s]
        else:
            shape = [length, b, s, *rest]
        out.append(x.new_empty(shape, dtype=dtype))
        if layout == "fused" and len(rest) == 1 and keep_gates:
            out.append(x.new_empty((length - 1, b * rest[0], 3 * s), dtype=dtype))
    return out


# ------------------------------------------------------------------------------ the operators


@torch.library.custom_op("spatialrec::scan_sequence", mutates_args=(), device_types=("cpu", "cuda"))
def _scan_sequence_impl(x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str) -> torch.Tensor:
    y, _ = _forward(x, params, directions, backend, save=False, keep_gates=False, carry=carry)
    return _in_output_format(x, y)


@_scan_sequence_impl.register_fake
def _scan_sequence_fake(x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str) -> torch.Tensor:
    return _empty_like_output(x)


def _no_backward(ctx: Any, grad: torch.Tensor) -> Any:
    raise RuntimeError(
        "spatialrec::scan_sequence keeps nothing for a backward; differentiate through "
        "spatialrec.ops.scan_sequence (or spatialrec::scan_sequence_forward), which keeps what the backend's backward needs"
    )


_scan_sequence_impl.register_autograd(_no_backward)


@torch.library.custom_op("spatialrec::scan_sequence_forward", mutates_args=(), device_types=("cpu", "cuda"))
def _scan_sequence_forward_impl(
    x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, keep_gates: bool, carry: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    y, saved = _forward(x, params, directions, backend, save=True, keep_gates=keep_gates, carry=carry)
    return _in_output_format(x, y, saved), saved


@_scan_sequence_forward_impl.register_fake
def _scan_sequence_forward_fake(
    x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, keep_gates: bool, carry: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return _empty_like_output(x), _saved_fakes(x, params, directions, backend, keep_gates)


@torch.library.custom_op("spatialrec::scan_sequence_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _scan_sequence_backward_impl(
    grad: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor], saved: list[torch.Tensor], directions: list[int], backend: str, carry: str
) -> list[torch.Tensor]:
    dx, *dp = _backward(grad, x, params, saved, directions, backend, carry)
    return [_in_output_format(x, dx, [grad])] + [_param_grad(p, g) for p, g in zip(params, dp)]


@_scan_sequence_backward_impl.register_fake
def _scan_sequence_backward_fake(
    grad: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor], saved: list[torch.Tensor], directions: list[int], backend: str, carry: str
) -> list[torch.Tensor]:
    return [_empty_like_output(x)] + [p.new_empty(p.shape) for p in params]


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, params, directions, backend, _keep_gates, carry = inputs
    _, saved = output
    # The saved tensors are outputs only to reach this context: no gradient flows into them.
    # Marking them non-differentiable is not enough: autograd would still hand the backward a
    # zero-filled gradient for each (measured: 105 ms of a 1.41 s layer step at 1 x 512 x 512,
    # S = 32, and ~150 MB of its peak memory), unless told not to materialise undefined gradients.
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, *params, *saved)
    ctx.num_params = len(params)
    ctx.directions = directions
    ctx.backend = backend
    ctx.carry = carry


def _backward_formula(ctx, grad: Optional[torch.Tensor], _grad_saved: list[Optional[torch.Tensor]]):  # type: ignore[no-untyped-def]
    x, *rest = ctx.saved_tensors
    if grad is None:  # not materialised (see _setup_context): y did not reach the loss
        return None, [None] * ctx.num_params, None, None, None, None
    params, saved = rest[: ctx.num_params], rest[ctx.num_params :]
    grads = torch.ops.spatialrec.scan_sequence_backward(grad, x, params, saved, ctx.directions, ctx.backend, ctx.carry)
    return grads[0], list(grads[1:]), None, None, None, None


_scan_sequence_forward_impl.register_autograd(_backward_formula, setup_context=_setup_context)

scan_sequence_op = torch.ops.spatialrec.scan_sequence.default
"""The registered inference op (``torch.ops.spatialrec.scan_sequence.default``), e.g. the key of
an ONNX ``custom_translation_table``."""

scan_sequence_forward_op = torch.ops.spatialrec.scan_sequence_forward.default
"""The registered forward op that keeps what the backward needs (``(y, saved)``)."""


def tracing() -> bool:
    """Whether torch.compile or torch.export is tracing the caller."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def compiling() -> bool:
    """Whether torch.compile, and not torch.export (whose programs and ONNX files keep plain
    ops), is tracing the caller."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


def backward_can_follow(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether a backward can follow a call on ``tensors``: grad mode on (not ``no_grad``, not
    ``inference_mode``), one of them requires grad, and not under ``torch.export`` (an exported
    program is an inference graph: its op is the one ONNX translates). While ``torch.jit.trace``
    records, grad mode is not asked: its check re-traces the call without grad and requires the
    same graph."""
    if torch.compiler.is_exporting() or not any(t.requires_grad for t in tensors):
        return False
    return torch.is_grad_enabled() or torch.jit.is_tracing()


def scan_sequence(
    x: torch.Tensor,
    params: Sequence[ScanParams],
    directions: Sequence[str],
    backend: str = "auto",
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` or ``(B, S, D, H, W)`` in each of ``directions`` in turn, through the ops.

    The same function as :func:`spatialrec.ops.directional_gru_scan_sequence`, eager and traced
    alike: ``spatialrec::scan_sequence_forward`` where a backward can follow
    (:func:`backward_can_follow`), which keeps what the backend's backward needs (the gates only
    where :func:`spatialrec.ops.fused.save_gates` says so and ``torch.jit.trace`` is not
    recording), else ``spatialrec::scan_sequence``, which keeps nothing.

    Args:
        x: prior states.
        params: one ``(weight_ih, weight_hh, bias_ih, bias_hh)`` tuple per direction.
        directions: canonical direction names (see :func:`spatialrec.ops.normalize_directions`).
        backend: backend name, ``"auto"`` allowed.
        carry: the cell of every sweep, ``"prior"`` (published) or ``"line"``
            (:data:`spatialrec.ops.gates.CARRIES`).

    Returns:
        The swept states, shape and dtype of ``x``, in :func:`output_format` (channels-last in
        2D, contiguous in 3D).
    """
    flat = [t for p in params for t in p]
    dims = x.dim() - 2
    codes = directions_to_codes(normalize_directions(directions, dims))
    if backward_can_follow([x, *flat]):
        keep_gates = not torch.jit.is_tracing() and save_gates()
        y, _ = torch.ops.spatialrec.scan_sequence_forward(x, flat, codes, backend, keep_gates, carry)
        return y
    return torch.ops.spatialrec.scan_sequence(x, flat, codes, backend, carry)
