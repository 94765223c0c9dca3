"""The scan as registered PyTorch operators: ``torch.ops.spatialrec.scan_sequence`` and its backward.

Why operators. A traced program (``torch.compile``, ``torch.export``, ONNX) should see the
sweeps as one node with a known output shape, not as the Python loop over lines, the
``as_strided`` views and the in-place BLAS calls of the kernels. ``torch.library.custom_op``
makes the kernels opaque to tracing; a fake (meta) implementation gives the output's shape,
dtype and strides without running them; ``register_autograd`` makes the op differentiable with a
backward that is itself an operator, so a compiled backward is one node too.

Schema::

    spatialrec::scan_sequence(Tensor x, Tensor[] params, int[] directions, str backend,
                              str carry) -> Tensor
    spatialrec::scan_sequence_backward(Tensor grad, Tensor x, Tensor[] params, int[] directions,
                                       str backend, str carry) -> Tensor[]

``x: (B, S, H, W)`` or ``(B, S, D, H, W)``; ``params`` the four tensors ``weight_ih, weight_hh,
bias_ih, bias_hh`` of each sweep, flattened in sweep order (``4 * len(directions)`` tensors);
``directions`` the numeric codes of :data:`spatialrec.ops.DIRECTIONS` (0 right, 1 left, 2 down,
3 up, 4 in, 5 out); ``carry`` the cell (:data:`spatialrec.ops.gates.CARRIES`); ``backend`` a name accepted by :func:`spatialrec.ops.resolve_backend`
(``"auto"`` is resolved inside the op, on the real tensor, so no environment lookup or import
happens in a traced region). The outputs are contiguous tensors of the inputs' shapes and dtypes,
whatever the inputs' memory format: an output whose strides followed its input's would be wrong
under inductor, which may give the op an input in another layout than the traced graph had
(channels-last convolution outputs on the CPU) and then, with dynamic shapes, re-strides a saved
activation with the first size's integer strides, so the backward read the op's output with the
wrong strides at every later size (silently wrong gradients, found on ``sdn_unet_pp``).

The backward op recomputes the forward under autograd and differentiates it with the chosen
backend's own backward (the fused backends' hand-written ones). That costs one extra forward
per training step compared with calling the backend directly, and the contiguous output costs a
layout copy after the 2D fused backend (which works channels-last), which is why
:func:`scan_sequence` (what the layers call) takes the op only where it matters: under
``torch.compile``/``torch.export`` tracing. Eager code calls the backends directly.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch

from .directions import DIRECTIONS, normalize_directions
from .scan import ScanParams, directional_gru_scan_sequence

__all__ = ["directions_to_codes", "scan_sequence", "scan_sequence_op"]


def directions_to_codes(directions: Sequence[str]) -> list[int]:
    """Canonical direction names -> their numeric codes (positions in :data:`DIRECTIONS`)."""
    return [DIRECTIONS.index(d) for d in directions]


def _unflatten(params: Sequence[torch.Tensor]) -> list[ScanParams]:
    return [(params[i], params[i + 1], params[i + 2], params[i + 3]) for i in range(0, len(params), 4)]


def _names(directions: Sequence[int]) -> tuple[str, ...]:
    return tuple(DIRECTIONS[d] for d in directions)


def _contiguous(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` contiguous (the strides the fakes declare), never aliasing ``x``."""
    if y.is_contiguous() and y.data_ptr() != x.data_ptr():
        return y
    return y.clone(memory_format=torch.contiguous_format)


@torch.library.custom_op("spatialrec::scan_sequence", mutates_args=(), device_types=("cpu", "cuda"))
def _scan_sequence_impl(x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str) -> torch.Tensor:
    with torch.no_grad():
        y = directional_gru_scan_sequence(x, _unflatten(params), _names(directions), backend=backend, carry=carry)
    return _contiguous(x, y)


@_scan_sequence_impl.register_fake
def _scan_sequence_fake(x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str) -> torch.Tensor:
    return x.new_empty(x.shape)


_AUTOGRAD_KEYS = functools.reduce(
    operator.or_,
    (
        torch._C.DispatchKeySet(k)
        for k in (
            torch._C.DispatchKey.ADInplaceOrView,
            torch._C.DispatchKey.AutogradOther,
            torch._C.DispatchKey.AutogradNestedTensor,
            torch._C.DispatchKey.AutogradCPU,
            torch._C.DispatchKey.AutogradCUDA,
        )
    ),
)


def _autograd_dispatch() -> torch._C._ForceDispatchKeyGuard:
    """Re-enable autograd dispatch inside an op implementation.

    The dispatcher calls a custom op's device implementation below the autograd keys (they are
    in the thread's exclude set), so tensors created there never record a graph. The backward
    op needs exactly that graph, of the backend's own autograd functions, for one call.
    """
    exclude = torch._C._dispatch_tls_local_exclude_set() - _AUTOGRAD_KEYS
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op("spatialrec::scan_sequence_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _scan_sequence_backward_impl(
    grad: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str
) -> list[torch.Tensor]:
    # Recompute the forward with autograd on and let the backend's own backward run.
    inputs = [x.detach().requires_grad_()] + [p.detach().requires_grad_() for p in params]
    with torch.enable_grad(), _autograd_dispatch():
        y = directional_gru_scan_sequence(inputs[0], _unflatten(inputs[1:]), _names(directions), backend=backend, carry=carry)
        grads = torch.autograd.grad(y, inputs, grad, allow_unused=True)
    return [_contiguous(t, torch.zeros_like(t) if g is None else g) for t, g in zip(inputs, grads)]


@_scan_sequence_backward_impl.register_fake
def _scan_sequence_backward_fake(
    grad: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor], directions: list[int], backend: str, carry: str
) -> list[torch.Tensor]:
    return [x.new_empty(x.shape)] + [p.new_empty(p.shape) for p in params]


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, params, directions, backend, carry = inputs
    ctx.save_for_backward(x, *params)
    ctx.directions = directions
    ctx.backend = backend
    ctx.carry = carry


def _backward(ctx, grad: torch.Tensor):  # type: ignore[no-untyped-def]
    x, *params = ctx.saved_tensors
    grads = torch.ops.spatialrec.scan_sequence_backward(grad, x, params, ctx.directions, ctx.backend, ctx.carry)
    return grads[0], list(grads[1:]), None, None, None


_scan_sequence_impl.register_autograd(_backward, setup_context=_setup_context)

scan_sequence_op = torch.ops.spatialrec.scan_sequence.default
"""The registered forward op (``torch.ops.spatialrec.scan_sequence.default``), e.g. the key of an
ONNX ``custom_translation_table``."""


def tracing() -> bool:
    """Whether torch.compile or torch.export is tracing the caller."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def scan_sequence(
    x: torch.Tensor,
    params: Sequence[ScanParams],
    directions: Sequence[str],
    backend: str = "auto",
    use_op: bool | None = None,
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x: (B, S, H, W)`` or ``(B, S, D, H, W)`` in each of ``directions`` in turn.

    The same function as :func:`spatialrec.ops.directional_gru_scan_sequence`; inputs are
    validated by the caller (the layers validate at construction and on the module input).

    Args:
        x: prior states.
        params: one ``(weight_ih, weight_hh, bias_ih, bias_hh)`` tuple per direction.
        directions: canonical direction names (see :func:`spatialrec.ops.normalize_directions`).
        backend: backend name, ``"auto"`` allowed.
        use_op: ``True``: call ``torch.ops.spatialrec.scan_sequence``; ``False``: call the backend
            directly; ``None`` (default): the op while tracing (compile, export), the backend
            directly in eager code (no recomputation in the backward, no layout copy).
        carry: the cell of every sweep, ``"prior"`` (published) or ``"line"``
            (:data:`spatialrec.ops.gates.CARRIES`).

    Returns:
        The swept states, shape and dtype of ``x``; contiguous through the op.
    """
    if use_op is None:
        use_op = tracing()
    if not use_op:
        # The backend's own layout (channels-last from the 2D fused backend): the layer hands the
        # caller's format back after its project-out, so a copy here would be wasted work.
        return directional_gru_scan_sequence(x, params, directions, backend=backend, carry=carry)
    flat = [t for p in params for t in p]
    dims = x.dim() - 2
    codes = directions_to_codes(normalize_directions(directions, dims))
    return torch.ops.spatialrec.scan_sequence(x, flat, codes, backend, carry)
