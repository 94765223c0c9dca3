"""The projections around the sweeps, in the layout the scan backend works in.

An SDN layer computes ``h = tanh(conv_in(x))``, sweeps ``h``, and projects ``y = conv_out(h)``
with a ``1x1`` convolution. Which memory layout those steps should run in, and which faster
kernels may replace torch's, depends on the backend and the device, not on the maths; this
module makes those choices, so that the layer reads as the maths:

- :func:`working_layout` decides once per forward. The 2D ``fused`` backend on the CPU works on
  ``S``-innermost lines: a channels-last input (cheap at ``in_channels << S``) makes the
  convolution produce channels-last states, which turns the scan's layout changes into copies
  of ``S``-long runs (oneDNN's convolutions are also faster in that format on the CPU).
- :func:`project_in_activation`: ``tanh(conv_in(x))`` in that layout, the tanh in place (the
  convolution's backward does not need its output, and a fresh full-size tensor costs page
  faults) and, in eager code, as :func:`spatialrec.ops.fused.tanh_` (3-4x torch's CPU tanh).
  A single small 3D volume's convolution on the CPU runs as one 2D convolution of its depth
  planes (:func:`conv3d_by_planes`), where torch would take its slow reference path.
- :func:`project_out`: ``conv_out(h)`` handed back in the caller's memory format; in eager code,
  channels-last states from the fused scan are projected with GEMMs that write the caller's
  contiguous format directly (:func:`spatialrec.ops.fused.project_channels_last`: no slow ``1x1``
  channels-last convolution, no transposing copy after it).

Traced programs (``torch.compile``, ``torch.export``, ``torch.jit.trace``) get plain torch ops:
the fast kernels are autograd functions made for eager CPU execution. Under ``torch.compile`` on
the CPU two of them are restated as traceable ops, because inductor's own code would be slower:
the tanh as ``2 sigmoid(2 v) - 1`` and the channels-last ``1x1`` projection as a matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .fused import project_channels_last, tanh_
from .library import compiling, tracing
from .scan import resolve_backend


class PointwiseConv(Protocol):
    """A ``1x1`` convolution module: callable, with ``weight: (C, S, 1, 1)`` and ``bias: (C,)`` or None."""

    weight: torch.Tensor
    bias: Optional[torch.Tensor]

    def __call__(self, h: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class WorkingLayout:
    """How one forward lays out the states around the scan (see :func:`working_layout`).

    Attributes:
        channels_last: run project-in, sweeps and project-out on channels-last states.
        restore_contiguous: the caller's input was contiguous: hand the output back contiguous.
        fast_kernels: eager code: the faster CPU tanh and GEMM projection may run.
    """

    channels_last: bool = False
    restore_contiguous: bool = False
    fast_kernels: bool = False


def working_layout(x: torch.Tensor, backend: Optional[str]) -> WorkingLayout:
    """The working layout for layer input ``x: (B, C, *spatial)`` swept by ``backend``.

    Args:
        x: the layer's input, NCHW or NCDHW.
        backend: the backend name of every sweep (``"auto"`` allowed, resolved for ``x``), or
            ``None`` when the sweeps run on different backends: then plain torch ops throughout.

    Returns:
        Channels-last states for the 2D ``fused`` backend on the CPU, else the input's layout;
        a contiguous 2D caller's output restored to contiguous (the 2D scan ops return
        channels-last states); fast kernels in eager code.

    Example:
        >>> working_layout(torch.randn(1, 3, 8, 8), "fused")
        WorkingLayout(channels_last=True, restore_contiguous=True, fast_kernels=True)
        >>> working_layout(torch.randn(1, 3, 8, 8), "reference")
        WorkingLayout(channels_last=False, restore_contiguous=True, fast_kernels=True)
    """
    # The 2D scan ops return channels-last states whatever the backend
    # (spatialrec.ops.library.output_format): a contiguous 2D caller's format is restored.
    restore = x.dim() == 4 and x.is_contiguous()
    if backend is None:
        return WorkingLayout(restore_contiguous=restore)
    eager = not (tracing() or torch.jit.is_tracing())
    if x.dim() == 4 and resolve_backend(backend, x) == "fused" and x.device.type == "cpu":
        return WorkingLayout(channels_last=True, restore_contiguous=restore, fast_kernels=eager)
    return WorkingLayout(restore_contiguous=restore, fast_kernels=eager)


def conv3d_by_planes(x: torch.Tensor, conv: nn.Conv3d) -> Optional[torch.Tensor]:
    """``conv(x)`` for ``x: (B, C, D, H, W)`` as one 2D convolution of the ``B D`` depth planes,
    or None where the convolution's geometry does not allow it.

    A ``(kd, kh, kw)`` kernel is ``kd`` 2D kernels ``(kh, kw)``, stacked as ``kd S`` output
    channels of one ``conv2d`` over the planes; output plane ``o`` sums the ``k``-th stack of
    input plane ``o + k - pad_d``. Exact up to summation order. Needs zero padding, one group,
    stride and dilation 1 along depth and a numeric padding; the height and width geometry is
    the 2D convolution's.

    Why: on the CPU torch runs a float32 ``Conv3d`` of a single small volume on its slow
    reference path instead of oneDNN (:func:`project_in_activation` says when this form is used;
    torch 2.13, 1 thread, 16 -> 16 channels, ``3x3x3`` at ``32^3``: forward+backward 168 ms,
    39 ms this way).

    Example:
        >>> conv = torch.nn.Conv3d(2, 3, 3, padding=1)
        >>> x = torch.randn(1, 2, 4, 5, 6)
        >>> torch.allclose(conv3d_by_planes(x, conv), conv(x), atol=1e-6)
        True
    """
    if (
        conv.padding_mode != "zeros"
        or conv.groups != 1
        or isinstance(conv.padding, str)
        or conv.stride[0] != 1
        or conv.dilation[0] != 1
    ):
        return None
    b, c, d, _, _ = x.shape
    kd, s, pd = conv.kernel_size[0], conv.out_channels, conv.padding[0]
    d_out = d + 2 * pd - kd + 1
    if d_out < 1:
        return None
    planes = x.transpose(1, 2).reshape(b * d, c, *x.shape[3:])
    weight = conv.weight.permute(2, 0, 1, 3, 4).reshape(kd * s, c, *conv.kernel_size[1:])
    y = F.conv2d(planes, weight, None, conv.stride[1:], conv.padding[1:], conv.dilation[1:])
    y = y.view(b, d, kd, s, *y.shape[2:])
    out = y.new_zeros((b, d_out, s, *y.shape[4:]))
    for k in range(kd):
        lo, hi = max(0, pd - k), min(d_out, d + pd - k)  # output planes that read input plane o + k - pd
        if lo < hi:
            out[:, lo:hi] += y[:, lo + k - pd : hi + k - pd, k]
    if conv.bias is not None:
        out += conv.bias.view(1, 1, s, 1, 1)
    return out.transpose(1, 2)


# Where torch's CPU Conv3d takes its reference path rather than oneDNN for a float32 batch of one:
# ATen's convolution dispatch prefers oneDNN only above this many elements of (B, C, D, H). Measured
# (torch 2.13, 1 thread, 3x3x3, forward+backward, Conv3d against conv3d_by_planes): C=16 at 32^3
# (16384) 168 ms / 39 ms; above it oneDNN wins, 16 at 48^3 48 / 152 ms, 32 at 32^3 50 / 93 ms; and
# with few input channels the 2D form gains nothing (4 -> 16 at 64^3: 367 / 383 ms).
_REFERENCE_CONV3D_MAX_ELEMENTS = 20480
_PLANES_MIN_CHANNELS = 8


def _conv3d_takes_reference_path(x: torch.Tensor, conv: object) -> bool:
    return (
        isinstance(conv, nn.Conv3d)
        and x.dim() == 5
        and x.shape[0] == 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape[1] >= _PLANES_MIN_CHANNELS
        and x.shape[1] * x.shape[2] * x.shape[3] <= _REFERENCE_CONV3D_MAX_ELEMENTS
    )


def _project_in(x: torch.Tensor, conv: Callable[[torch.Tensor], torch.Tensor], layout: WorkingLayout) -> torch.Tensor:
    if layout.fast_kernels and _conv3d_takes_reference_path(x, conv) and not _cpu_autocast():
        h = conv3d_by_planes(x, conv)  # type: ignore[arg-type]
        if h is not None:
            return h
    return conv(x)


def project_in_activation(x: torch.Tensor, conv: Callable[[torch.Tensor], torch.Tensor], layout: WorkingLayout) -> torch.Tensor:
    """``tanh(conv(x))`` in ``layout``: ``x: (B, C, *spatial)`` -> ``(B, S, *spatial')``.

    ``conv`` is the project-in convolution (any geometry, transposed or not); the result has the
    working layout's memory format.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        >>> x = torch.randn(1, 3, 5, 6)
        >>> h = project_in_activation(x, conv, working_layout(x, "fused"))
        >>> h.shape, h.is_contiguous(memory_format=torch.channels_last)
        (torch.Size([1, 8, 5, 6]), True)
        >>> torch.allclose(h, torch.tanh(conv(x)), atol=1e-6)
        True
    """
    if layout.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    h = _project_in(x, conv, layout)
    if layout.fast_kernels:
        return tanh_(h)
    if compiling() and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
        # The identity tanh_ uses in eager code: inductor's CPU tanh is several times slower
        # than its vectorised sigmoid (after a (1, 150, 128, 128) projection: 6-8 ms against
        # 2 ms), and compiled code then rounds as eager code does.
        return torch.sigmoid(2 * h) * 2 - 1
    return h.tanh_()


def _cpu_autocast() -> bool:
    """Whether autocast is on for the CPU (``torch.is_autocast_enabled(device)`` is torch >= 2.4)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def project_out(h: torch.Tensor, conv: PointwiseConv, layout: WorkingLayout) -> torch.Tensor:
    """``conv(h)`` for swept states ``h: (B, S, *spatial)`` -> ``(B, C, *spatial)``, in the
    caller's memory format.

    ``conv`` is the ``1x1`` project-out convolution. A channels-last output would change which
    convolution algorithms run downstream (and so their rounding) in the caller's network, so a
    contiguous caller gets a contiguous output.

    Example:
        >>> conv = torch.nn.Conv2d(8, 4, 1)
        >>> x = torch.randn(1, 3, 5, 6)
        >>> h = torch.randn(1, 8, 5, 6).contiguous(memory_format=torch.channels_last)
        >>> y = project_out(h, conv, working_layout(x, "fused"))
        >>> y.shape, y.is_contiguous(), torch.allclose(y, conv(h), atol=1e-6)
        (torch.Size([1, 4, 5, 6]), True, True)
    """
    if (
        layout.fast_kernels
        and layout.restore_contiguous
        and h.device.type == "cpu"
        and h.permute(0, 2, 3, 1).is_contiguous()
        and not _cpu_autocast()
    ):
        return project_channels_last(h, conv.weight, conv.bias)
    if layout.channels_last and compiling() and not _cpu_autocast():
        # channels_last: the 2D fused scan on the CPU (working_layout). The same GEMM as project_channels_last, as traced torch ops: a channels-last 1x1
        # convolution takes torch's slow path on the CPU (in a 2D SDN U-Net's compiled training
        # step at 128 px: 14 ms forward and backward, against ~4 ms for the GEMMs).
        y = torch.matmul(h.permute(0, 2, 3, 1), conv.weight.flatten(1).t())
        if conv.bias is not None:
            y = y + conv.bias
        y = y.permute(0, 3, 1, 2)
        return y.contiguous() if layout.restore_contiguous else y.contiguous(memory_format=torch.channels_last)
    y = conv(h)
    if layout.restore_contiguous:
        return y.contiguous()
    if layout.channels_last:
        # A channels-last caller keeps its format.
        return y.contiguous(memory_format=torch.channels_last)
    return y


__all__ = ["PointwiseConv", "WorkingLayout", "conv3d_by_planes", "project_in_activation", "project_out", "working_layout"]
