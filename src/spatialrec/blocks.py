"""Convolution and SDN blocks shared by the models (DESIGN.md, "Blocks used by the paper's models").

- :class:`VGGBlock`: ``(Conv3x3 -> BatchNorm -> ReLU) x 2``.
- :class:`SDNBlock`: ``Conv3x3 -> BN -> ReLU -> SDN(out, out) -> BN -> ReLU``.
- :class:`ResidualSDNBlock`: the same with :class:`~spatialrec.ResidualSDN` in the SDN's place.

Each block keeps its layers in one ``nn.Sequential`` called ``net`` with the published code's
order (indices 0-5: conv, BN, ReLU, conv or SDN, BN, ReLU), so a published block's
``state_dict`` lines up index by index (the SDN's own keys go through
:func:`spatialrec.convert_published_state_dict`).

:func:`make_block` builds a block by kind name; :func:`set_sdn_backend` switches the scan backend
of every SDN layer inside a module (a model, a block).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn
import torch

from .layers import ResidualSDN, SpatialDependencyLayer, SpatialDependencyLayer3d
from .ops import DirectionLike, resolve_backend

BLOCK_KINDS: tuple[str, ...] = ("vgg", "sdn", "residual_sdn")
"""The block kinds :func:`make_block` knows."""


def _check_channels(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class VGGBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch normalisation and ReLU.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convolutions' outputs.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Example:
        >>> VGGBlock(3, 32)(torch.randn(2, 3, 20, 28)).shape
        torch.Size([2, 32, 20, 28])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = _check_channels("in_channels", in_channels)
        self.out_channels = _check_channels("out_channels", out_channels)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``."""
        return self.net(x)


class _SDNBlockBase(nn.Module):
    _layer_cls: type[nn.Module] = SpatialDependencyLayer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 150,
        directions: Sequence[DirectionLike] = ("right", "down"),
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.in_channels = _check_channels("in_channels", in_channels)
        self.out_channels = _check_channels("out_channels", out_channels)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            self._layer_cls(
                out_channels, out_channels, state_size=state_size, directions=directions,
                kernel_size=3, stride=1, padding=1, backend=backend,
            ),  # fmt: skip
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    @property
    def sdn(self) -> nn.Module:
        """The block's SDN layer (``net[3]``)."""
        return self.net[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``."""
        return self.net(x)


class SDNBlock(_SDNBlockBase):
    """A 3x3 convolution then an SDN layer, each followed by batch normalisation and ReLU.

    ``Conv3x3 -> BN -> ReLU -> SpatialDependencyLayer(out, out, S, directions, k=3, p=1) -> BN
    -> ReLU``: the VGG block with its second convolution replaced by spatial recurrence, so every
    output pixel sees the whole image upstream of it in the sweep order.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the convolution, of the SDN layer and of the output.
        state_size: ``S`` of the SDN layer (the paper: 150).
        directions: sweep directions, in composition order (the paper: right then down).
        backend: scan backend of the SDN layer (``"auto"``, ``"reference"``, ``"fused"``, ...).

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Example:
        >>> SDNBlock(8, 16, state_size=8)(torch.randn(2, 8, 12, 10)).shape
        torch.Size([2, 16, 12, 10])
    """

    _layer_cls = SpatialDependencyLayer


class ResidualSDNBlock(_SDNBlockBase):
    """:class:`SDNBlock` with a gated residual SDN (:class:`~spatialrec.ResidualSDN`) in place of the SDN.

    ``Conv3x3 -> BN -> ReLU -> ResidualSDN(out, out, S, directions, k=3, p=1) -> BN -> ReLU``.
    The residual SDN mixes a 3x3 convolution and the SDN output with a learned per-pixel gate.

    Args:
        in_channels, out_channels, state_size, directions, backend: as for :class:`SDNBlock`.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Example:
        >>> ResidualSDNBlock(8, 16, state_size=8)(torch.randn(2, 8, 12, 10)).shape
        torch.Size([2, 16, 12, 10])
    """

    _layer_cls = ResidualSDN


def make_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    state_size: int = 150,
    directions: Sequence[DirectionLike] = ("right", "down"),
    backend: str = "auto",
) -> nn.Module:
    """Build a block by kind: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.

    ``state_size``, ``directions`` and ``backend`` are used by the SDN kinds and ignored by
    ``"vgg"``.

    Shape of the returned block: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.

    Raises:
        ValueError: ``kind`` is not one of :data:`BLOCK_KINDS`.
    """
    if kind == "vgg":
        return VGGBlock(in_channels, out_channels)
    if kind == "sdn":
        return SDNBlock(in_channels, out_channels, state_size, directions, backend)
    if kind == "residual_sdn":
        return ResidualSDNBlock(in_channels, out_channels, state_size, directions, backend)
    raise ValueError(f"block kind {kind!r} is unknown; expected one of {BLOCK_KINDS}")


def set_sdn_backend(module: nn.Module, backend: str) -> int:
    """Set the scan backend of every SDN layer inside ``module``; return how many were set.

    3D SDN layers (:class:`~spatialrec.SpatialDependencyLayer3d`) count too; in 3D ``"triton"``
    runs the fused backend.

    Args:
        module: any module (a model, a block); searched recursively.
        backend: ``"auto"``, ``"reference"``, ``"fused"`` or ``"triton"``.

    Raises:
        ValueError: ``backend`` names no known backend.

    Example:
        >>> model = create_model("sdn_unet")  # doctest: +SKIP
        >>> set_sdn_backend(model, "reference")  # doctest: +SKIP
        4
    """
    resolve_backend(backend)
    count = 0
    for m in module.modules():
        if isinstance(m, (SpatialDependencyLayer, SpatialDependencyLayer3d)):
            m.backend = backend
            count += 1
    return count


def count_sdn_layers(module: nn.Module) -> int:
    """Number of SDN layers (:class:`~spatialrec.SpatialDependencyLayer`, including those inside
    :class:`~spatialrec.ResidualSDN`, and their 3D counterparts) in ``module``."""
    return sum(isinstance(m, (SpatialDependencyLayer, SpatialDependencyLayer3d)) for m in module.modules())


__all__ = [
    "BLOCK_KINDS",
    "ResidualSDNBlock",
    "SDNBlock",
    "VGGBlock",
    "count_sdn_layers",
    "make_block",
    "set_sdn_backend",
]
