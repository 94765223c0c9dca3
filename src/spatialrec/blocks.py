"""Convolution and SDN blocks shared by the models (docs/maths.md, "Blocks used by the paper's
models"), for maps and volumes alike (``spatial_dims`` 2 or 3).

- :class:`VGGBlock`: ``(Conv3x3 -> Norm -> ReLU) x 2``.
- :class:`SDNBlock`: ``Conv3x3 -> Norm -> ReLU -> SDN(out, out) -> Norm -> ReLU``.
- :class:`ResidualSDNBlock`: the same with :class:`~spatialrec.ResidualSDN` in the SDN's place.
- :class:`UpBlock`: a decoder stage, x2 up-sampling (:class:`InterpolateProject` or a transposed
  convolution), concatenation with the skip, then a block.

``Norm`` is ``BatchNormNd`` by default in 2D (the paper) and ``InstanceNormNd(affine=True)`` in
3D, where a batch holds one or two patches (``norm=`` overrides). Each block keeps its layers in
one ``nn.Sequential`` called ``net`` with the published code's order (indices 0-5: conv, norm,
ReLU, conv or SDN, norm, ReLU), so a published block's ``state_dict`` lines up index by index
(the SDN's own keys go through :func:`spatialrec.convert_published_state_dict`).

:func:`make_block` builds a block by kind name; :func:`set_sdn_backend` switches the scan backend
of every SDN layer inside a module (a model, a block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_int, check_spatial_dims
from .layers import COMPOSITIONS, ResidualSDN, SpatialDependencyLayer
from .layers.nd import DEFAULT_NORM, NORMS, conv_cls, interpolation_mode, norm_layer
from .ops import DirectionLike, resolve_backend, upsample2x
from .ops.library import compiling
from .ops.gates import check_carry

BLOCK_KINDS: tuple[str, ...] = ("vgg", "sdn", "residual_sdn")
"""The block kinds :func:`make_block` knows."""

SDN_BLOCK_KINDS: tuple[str, ...] = ("sdn", "residual_sdn")
"""The block kinds with spatial recurrence."""

UPSAMPLE_MODES: tuple[str, ...] = ("interpolate", "transposed")
"""How :class:`UpBlock` up-samples: linear interpolation (bilinear/trilinear) and a 1x1 conv, or a
2x stride-2 transposed convolution."""


def resolve_norm(norm: Optional[str], spatial_dims: int) -> str:
    """``norm`` checked against ``NORMS``, or the default of ``spatial_dims`` when ``None``."""
    return DEFAULT_NORM[spatial_dims] if norm is None else check_choice("norm", norm, NORMS)


def _conv_norm_relu(spatial_dims: int, norm: str, c_in: int, c_out: int) -> list[nn.Module]:
    return [
        conv_cls(spatial_dims)(c_in, c_out, kernel_size=3, padding=1),
        norm_layer(norm, spatial_dims, c_out),
        nn.ReLU(inplace=True),
    ]


class _Block(nn.Module):
    """What every block shares: it checks and keeps ``spatial_dims``, ``in_channels`` and
    ``out_channels``, and its ``net`` is ``Conv3x3 -> Norm -> ReLU`` (``in -> out``) followed by
    the layers ``second(norm)`` returns for the resolved ``norm`` (``out -> out``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int,
        norm: Optional[str],
        second: Callable[[str], list[nn.Module]],
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        n = resolve_norm(norm, spatial_dims)
        self.net = nn.Sequential(*_conv_norm_relu(spatial_dims, n, in_channels, out_channels), *second(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``."""
        return self.net(x)


class VGGBlock(_Block):
    """Two 3x3 (3x3x3) convolutions, each followed by normalisation and ReLU.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convolutions' outputs.
        spatial_dims: 2 (default) or 3.
        norm: ``"batch"`` or ``"instance"``; default batch in 2D, instance in 3D.

    Shape:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    Example:
        >>> VGGBlock(3, 32)(torch.randn(2, 3, 20, 28)).shape
        torch.Size([2, 32, 20, 28])
        >>> VGGBlock(1, 8, spatial_dims=3)(torch.randn(1, 1, 5, 6, 7)).shape
        torch.Size([1, 8, 5, 6, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2, norm: Optional[str] = None) -> None:
        super().__init__(
            in_channels, out_channels, spatial_dims, norm, lambda n: _conv_norm_relu(spatial_dims, n, out_channels, out_channels)
        )


class _SDNBlockBase(_Block):
    _layer_cls: type[nn.Module] = SpatialDependencyLayer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: Optional[int] = None,
        directions: Optional[Sequence[DirectionLike]] = None,
        backend: str = "auto",
        spatial_dims: int = 2,
        norm: Optional[str] = None,
    ) -> None:
        def sdn_norm_relu(n: str) -> list[nn.Module]:
            return [
                self._layer_cls(
                    out_channels, out_channels, state_size=state_size, directions=directions,
                    kernel_size=3, stride=1, padding=1, backend=backend, spatial_dims=spatial_dims,
                ),
                norm_layer(n, spatial_dims, out_channels),
                nn.ReLU(inplace=True),
            ]  # fmt: skip

        super().__init__(in_channels, out_channels, spatial_dims, norm, sdn_norm_relu)

    @property
    def sdn(self) -> nn.Module:
        """The block's SDN layer (``net[3]``)."""
        return self.net[3]


class SDNBlock(_SDNBlockBase):
    """A 3x3 convolution then an SDN layer, each followed by normalisation and ReLU.

    ``Conv3x3 -> Norm -> ReLU -> SpatialDependencyLayer(out, out, S, directions, k=3, p=1) ->
    Norm -> ReLU``: the VGG block with its second convolution replaced by spatial recurrence, so
    every output pixel sees the whole image upstream of it in the sweep order.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the convolution, of the SDN layer and of the output.
        state_size: ``S`` of the SDN layer (default 150 in 2D, the paper's; 32 in 3D).
        directions: sweep directions, in composition order (default right then down; in 3D
            right, down, in).
        backend: scan backend of the SDN layer (``"auto"``, ``"reference"``, ``"fused"``, ...).
        spatial_dims: 2 (default) or 3.
        norm: ``"batch"`` or ``"instance"``; default batch in 2D, instance in 3D.

    Shape:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    Example:
        >>> SDNBlock(8, 16, state_size=8)(torch.randn(2, 8, 12, 10)).shape
        torch.Size([2, 16, 12, 10])
        >>> SDNBlock(4, 8, state_size=4, spatial_dims=3)(torch.randn(1, 4, 3, 5, 6)).shape
        torch.Size([1, 8, 3, 5, 6])
    """

    _layer_cls = SpatialDependencyLayer


class ResidualSDNBlock(_SDNBlockBase):
    """:class:`SDNBlock` with a gated residual SDN (:class:`~spatialrec.ResidualSDN`) in place of the SDN.

    ``Conv3x3 -> Norm -> ReLU -> ResidualSDN(out, out, S, directions, k=3, p=1) -> Norm -> ReLU``.
    The residual SDN mixes a 3x3 convolution and the SDN output with a learned per-pixel gate.

    Args:
        in_channels, out_channels, state_size, directions, backend, spatial_dims, norm: as for
            :class:`SDNBlock`.

    Example:
        >>> ResidualSDNBlock(8, 16, state_size=8)(torch.randn(2, 8, 12, 10)).shape
        torch.Size([2, 16, 12, 10])
    """

    _layer_cls = ResidualSDN


def make_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    state_size: Optional[int] = None,
    directions: Optional[Sequence[DirectionLike]] = None,
    backend: str = "auto",
    spatial_dims: int = 2,
    norm: Optional[str] = None,
) -> nn.Module:
    """Build a block by kind: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.

    ``state_size``, ``directions`` and ``backend`` are used by the SDN kinds and ignored by
    ``"vgg"``.

    Shape of the returned block: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    Raises:
        ValueError: ``kind`` is not one of :data:`BLOCK_KINDS`.
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block kind {kind!r} is unknown; expected one of {BLOCK_KINDS}")
    if kind == "vgg":
        return VGGBlock(in_channels, out_channels, spatial_dims, norm)
    cls = SDNBlock if kind == "sdn" else ResidualSDNBlock
    return cls(in_channels, out_channels, state_size, directions, backend, spatial_dims, norm)


def pad_to_match(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` to those of ``reference`` (split between both sides,
    the odd pixel at the far side)."""
    diff = [r - s for r, s in zip(reference.shape[2:], x.shape[2:])]
    if not any(diff):
        return x
    pads: list[int] = []
    for d in reversed(diff):  # F.pad lists the last axis first
        pads += [d // 2, d - d // 2]
    return F.pad(x, pads)


class InterpolateProject(nn.Sequential):
    """x2 linear interpolation (``align_corners=True``, bilinear or trilinear) and a 1x1 convolution
    to ``out_channels``, as the published ``nn.Sequential(Upsample, Conv)``: same indices, same
    ``state_dict`` keys (``1.weight``, ``1.bias``), the same function.

    The forward runs the projection first. The two commute: both are linear, the convolution
    mixes channels at each pixel and the interpolation mixes pixels in each channel with weights
    that sum to one, so the bias passes through (the outputs agree to float rounding). Projecting
    first convolves ``2^d`` times fewer pixels and interpolates ``out_channels`` instead of
    ``in_channels`` maps (a U-Net halves them): 3-11% of a whole SDN U-Net's step on one CPU
    thread. It also keeps ``torch.compile`` from fusing the interpolation's gathers with the
    previous block's normalisation, which recomputed the norm at every tap (a 3D SDN U-Net's
    compiled forward at 48^3 was 0.65-0.70x eager's speed, 0.83-0.85x with this order;
    docs/deploy.md).

    Under ``torch.compile`` (not ``torch.export``, whose programs and ONNX files keep the plain
    interpolation) the interpolation is the registered operator
    :func:`spatialrec.ops.upsample2x`, the same torch kernel as one opaque node: inductor's own
    code for the decomposed interpolation is 2-4x slower on the CPU.

    Shape: ``(B, in_channels, *s) -> (B, out_channels, *2s)``.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode=interpolation_mode(spatial_dims), align_corners=True),
            conv_cls(spatial_dims)(in_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self[1](x)
        if compiling():
            return upsample2x(h)  # self[0]'s interpolation as one operator (see above)
        return self[0](h)


class UpBlock(nn.Module):
    """Decoder stage: x2 up-sampling, pad to the skip's size, concatenate ``[skip, up]``, block.

    Args:
        in_channels: channels of the deeper map (``2 * out_channels`` in a U-Net).
        out_channels: channels of the skip and of the output.
        block: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.
        upsample: ``"interpolate"`` (bilinear/trilinear x2 with ``align_corners=True`` and a 1x1
            convolution to ``in_channels // 2``: :class:`InterpolateProject`) or ``"transposed"``
            (a 2x stride-2 transposed convolution to ``in_channels // 2``).
        state_size, directions, backend: for the SDN block kinds.
        spatial_dims: 2 (default) or 3.
        norm: normalisation of the block (default batch in 2D, instance in 3D).

    Shape:
        ``x: (B, in_channels, *s)``, ``skip: (B, out_channels, *S)`` with ``S ~ 2s``
        -> ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block: str = "vgg",
        upsample: str = "interpolate",
        state_size: Optional[int] = None,
        directions: Optional[Sequence[DirectionLike]] = None,
        backend: str = "auto",
        spatial_dims: int = 2,
        norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        check_choice("upsample", upsample, UPSAMPLE_MODES)
        half = in_channels // 2
        if upsample == "interpolate":
            self.upsample: nn.Module = InterpolateProject(in_channels, half, spatial_dims)
        else:
            self.upsample = conv_cls(spatial_dims, transposed=True)(in_channels, half, kernel_size=2, stride=2)
        self.block = make_block(block, out_channels + half, out_channels, state_size, directions, backend, spatial_dims, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, *s)``, ``skip: (B, C_out, *S)`` -> ``(B, C_out, *S)``."""
        return self.block(torch.cat([skip, pad_to_match(self.upsample(x), skip)], dim=1))


def set_sdn_backend(module: nn.Module, backend: str) -> int:
    """Set the scan backend of every SDN layer inside ``module``; return how many were set.

    Volumetric SDN layers count too.

    Args:
        module: any module (a model, a block); searched recursively.
        backend: ``"auto"``, ``"reference"``, ``"fused"`` or ``"triton"``.

    Raises:
        ValueError: ``backend`` names no known backend.

    Example:
        >>> from spatialrec import create_model
        >>> model = create_model("sdn_unet")
        >>> set_sdn_backend(model, "reference")  # the number of SDN layers changed
        4
    """
    resolve_backend(backend)
    layers = [m for m in module.modules() if isinstance(m, SpatialDependencyLayer)]
    for layer in layers:
        layer.backend = backend
    return len(layers)


def set_sdn_cell(module: nn.Module, carry: str, composition: str) -> int:
    """Set the cell of every SDN layer inside ``module``; return how many were set.

    ``set_sdn_cell(model, **PUBLISHED_CELL)`` turns a model's layers into the published SDN layer
    (what ``from_published_args`` does); the parameters are the same for every cell, only what the
    sweeps compute changes (``docs/maths.md``).

    Args:
        module: any module (a model, a block); searched recursively.
        carry: ``"line"`` or ``"prior"`` (:data:`spatialrec.ops.gates.CARRIES`).
        composition: ``"parallel"`` or ``"serial"`` (:data:`spatialrec.layers.COMPOSITIONS`).

    Example:
        >>> from spatialrec.layers import PUBLISHED_CELL
        >>> block = SDNBlock(4, 8, state_size=4, directions=("right", "down", "left", "up"))
        >>> set_sdn_cell(block, **PUBLISHED_CELL), block.sdn.carry, block.sdn.composition
        (1, 'prior', 'serial')
    """
    check_carry(carry)
    check_choice("composition", composition, COMPOSITIONS)
    layers = [m for m in module.modules() if isinstance(m, SpatialDependencyLayer)]
    for layer in layers:
        layer.carry = carry
        layer.composition = composition
    return len(layers)


def count_sdn_layers(module: nn.Module) -> int:
    """Number of SDN layers (:class:`~spatialrec.SpatialDependencyLayer`, including those inside
    :class:`~spatialrec.ResidualSDN`, 2D and 3D) in ``module``."""
    return sum(isinstance(m, SpatialDependencyLayer) for m in module.modules())


__all__ = [
    "BLOCK_KINDS",
    "SDN_BLOCK_KINDS",
    "UPSAMPLE_MODES",
    "InterpolateProject",
    "ResidualSDNBlock",
    "SDNBlock",
    "UpBlock",
    "VGGBlock",
    "count_sdn_layers",
    "make_block",
    "pad_to_match",
    "resolve_norm",
    "set_sdn_backend",
    "set_sdn_cell",
]
