"""x2 linear up-sampling (``align_corners=True``) as a registered operator, for compiled code.

The decoders' up-sampling (:class:`spatialrec.blocks.InterpolateProject`) is
``F.interpolate(x, scale_factor=2, mode="bilinear" | "trilinear", align_corners=True)``.
``torch.compile`` decomposes that into index arithmetic and gathers, and inductor's CPU code for
them is 2-4x slower than torch's own kernels (measured on one thread: a 2D SDN U-Net's training
step at 128 px, the interpolations' forward 15.7 ms against 6.5 ms eager, their backward ~15 ms
against 11.6 ms; a 3D SDN U-Net's at 32^3, 54 + 22 ms against 6 + 9 ms; docs/deploy.md).
:func:`upsample2x` is the same function as a ``torch.library`` operator, which a compiled graph
calls as one opaque node that runs torch's kernel, forward (``spatialrec::upsample2x``) and
backward (``spatialrec::upsample2x_backward``, torch's ``upsample_*_backward``).

Only compiled code uses it: :class:`spatialrec.blocks.InterpolateProject` and
:func:`interpolate2x` (what :class:`spatialrec.models.UNetPlusPlus` calls) check
``torch.compiler.is_compiling()``. Eager code calls ``F.interpolate`` directly, which is the
same kernel without an operator's dispatch, and ``torch.export``/ONNX keep the plain
interpolation, which they translate natively (an ONNX ``Resize``).

Schemas::

    spatialrec::upsample2x(Tensor x) -> Tensor
    spatialrec::upsample2x_backward(Tensor grad, SymInt[] input_size) -> Tensor

``x: (B, C, H, W)`` (bilinear) or ``(B, C, D, H, W)`` (trilinear), floating point; the output has
every spatial side doubled and is contiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers.nd import interpolation_mode
from .library import compiling


def _mode(x: torch.Tensor) -> str:
    """``F.interpolate``'s linear mode for ``x``'s rank."""
    if x.dim() not in (4, 5):
        raise ValueError(f"upsample2x takes a (B, C, H, W) or (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    return interpolation_mode(x.dim() - 2)


@torch.library.custom_op("spatialrec::upsample2x", mutates_args=(), device_types=None)
def _upsample2x_impl(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode=_mode(x), align_corners=True).contiguous()


@_upsample2x_impl.register_fake
def _upsample2x_fake(x: torch.Tensor) -> torch.Tensor:
    _mode(x)  # the same error as the real op
    return x.new_empty((*x.shape[:2], *(2 * s for s in x.shape[2:])))


@torch.library.custom_op("spatialrec::upsample2x_backward", mutates_args=(), device_types=None)
def _upsample2x_backward_impl(grad: torch.Tensor, input_size: list[int]) -> torch.Tensor:
    grad = grad.contiguous()
    out_size = list(grad.shape[2:])
    if grad.dim() == 4:
        return torch.ops.aten.upsample_bilinear2d_backward(grad, out_size, input_size, True, None, None)
    return torch.ops.aten.upsample_trilinear3d_backward(grad, out_size, input_size, True, None, None, None)


@_upsample2x_backward_impl.register_fake
def _upsample2x_backward_fake(grad: torch.Tensor, input_size: list[int]) -> torch.Tensor:
    return grad.new_empty(input_size)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    (x,) = inputs
    ctx.input_size = list(x.shape)


def _backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.ops.spatialrec.upsample2x_backward(grad, ctx.input_size)


_upsample2x_impl.register_autograd(_backward, setup_context=_setup_context)


def interpolate2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="bilinear"/"trilinear", align_corners=True)`` by
    ``x``'s rank: the plain interpolation in eager code and under ``torch.export``, the operator
    :func:`upsample2x` under ``torch.compile`` (see the module docstring). What the decoders call.

    Example:
        >>> x = torch.randn(1, 2, 3, 4, 5)
        >>> torch.equal(interpolate2x(x), F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True))
        True
    """
    if compiling():
        return upsample2x(x)
    return F.interpolate(x, scale_factor=2, mode=_mode(x), align_corners=True)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="bilinear"/"trilinear", align_corners=True)``
    (by ``x``'s rank), as the registered operator ``spatialrec::upsample2x``; differentiable.
    Returns a contiguous tensor.

    Example:
        >>> x = torch.randn(1, 2, 3, 4)
        >>> y = upsample2x(x)
        >>> y.shape, torch.equal(y, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
        (torch.Size([1, 2, 6, 8]), True)
    """
    return torch.ops.spatialrec.upsample2x(x)


__all__ = ["interpolate2x", "upsample2x"]
