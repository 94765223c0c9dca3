"""Volumetric convolution and SDN blocks for the 3D models (the 3D counterparts of :mod:`spatialrec.blocks`).

- :class:`VGGBlock3d`: ``(Conv3x3x3 -> Norm -> ReLU) x 2``.
- :class:`SDNBlock3d`: ``Conv3x3x3 -> Norm -> ReLU -> SDN3d(out, out) -> Norm -> ReLU``.
- :class:`ResidualSDNBlock3d`: the same with :class:`~spatialrec.ResidualSDN3d` in the SDN's place.

Normalisation defaults to ``InstanceNorm3d(affine=True)``: 3D training runs with a batch of one
or two patches, where batch statistics are too noisy for ``BatchNorm3d`` (still available
with ``norm="batch"``). Each block keeps its layers in one ``nn.Sequential`` called ``net``
(indices 0-5: conv, norm, ReLU, conv or SDN, norm, ReLU), as the 2D blocks do.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers.sdn3d import DEFAULT_DIRECTIONS_3D, ResidualSDN3d, SpatialDependencyLayer3d
from .ops import DirectionLike, resolve_backend3d

BLOCK_KINDS_3D: tuple[str, ...] = ("vgg", "sdn", "residual_sdn")
"""The block kinds :func:`make_block3d` knows."""

NORMS_3D: tuple[str, ...] = ("instance", "batch")
"""The normalisations the 3D blocks support."""


def _check_channels(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def make_norm3d(norm: str, channels: int) -> nn.Module:
    """``"instance"`` -> ``InstanceNorm3d(channels, affine=True)``; ``"batch"`` -> ``BatchNorm3d(channels)``.

    Raises:
        ValueError: ``norm`` is not one of :data:`NORMS_3D`.
    """
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"norm={norm!r} is not valid; expected one of {NORMS_3D}")


class VGGBlock3d(nn.Module):
    """Two 3x3x3 convolutions, each followed by normalisation and ReLU.

    Args:
        in_channels: channels of the input.
        out_channels: channels of both convolutions' outputs.
        norm: ``"instance"`` (default) or ``"batch"``.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``.

    Example:
        >>> VGGBlock3d(1, 8)(torch.randn(1, 1, 5, 6, 7)).shape
        torch.Size([1, 8, 5, 6, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.in_channels = _check_channels("in_channels", in_channels)
        self.out_channels = _check_channels("out_channels", out_channels)
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            make_norm3d(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
            make_norm3d(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, D, H, W)`` -> ``(B, out_channels, D, H, W)``."""
        return self.net(x)


class _SDNBlock3dBase(nn.Module):
    _layer_cls: type[nn.Module] = SpatialDependencyLayer3d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 32,
        directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
        backend: str = "auto",
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.in_channels = _check_channels("in_channels", in_channels)
        self.out_channels = _check_channels("out_channels", out_channels)
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            make_norm3d(norm, out_channels),
            nn.ReLU(inplace=True),
            self._layer_cls(
                out_channels, out_channels, state_size=state_size, directions=directions,
                kernel_size=3, stride=1, padding=1, backend=backend,
            ),  # fmt: skip
            make_norm3d(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    @property
    def sdn(self) -> nn.Module:
        """The block's SDN layer (``net[3]``)."""
        return self.net[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, D, H, W)`` -> ``(B, out_channels, D, H, W)``."""
        return self.net(x)


class SDNBlock3d(_SDNBlock3dBase):
    """A 3x3x3 convolution then a 3D SDN layer, each followed by normalisation and ReLU.

    ``Conv3x3x3 -> Norm -> ReLU -> SpatialDependencyLayer3d(out, out, S, directions, k=3, p=1)
    -> Norm -> ReLU``.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the convolution, of the SDN layer and of the output.
        state_size: ``S`` of the SDN layer (default 32).
        directions: 3D sweep directions, in composition order (default one per axis).
        backend: scan backend of the SDN layer.
        norm: ``"instance"`` (default) or ``"batch"``.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``.

    Example:
        >>> SDNBlock3d(4, 8, state_size=4)(torch.randn(1, 4, 3, 5, 6)).shape
        torch.Size([1, 8, 3, 5, 6])
    """

    _layer_cls = SpatialDependencyLayer3d


class ResidualSDNBlock3d(_SDNBlock3dBase):
    """:class:`SDNBlock3d` with a gated residual SDN (:class:`~spatialrec.ResidualSDN3d`) in place of the SDN.

    Args:
        in_channels, out_channels, state_size, directions, backend, norm: as for :class:`SDNBlock3d`.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``.

    Example:
        >>> ResidualSDNBlock3d(4, 8, state_size=4)(torch.randn(1, 4, 3, 5, 6)).shape
        torch.Size([1, 8, 3, 5, 6])
    """

    _layer_cls = ResidualSDN3d


def make_block3d(
    kind: str,
    in_channels: int,
    out_channels: int,
    state_size: int = 32,
    directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
    backend: str = "auto",
    norm: str = "instance",
) -> nn.Module:
    """Build a 3D block by kind: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.

    ``state_size``, ``directions`` and ``backend`` are used by the SDN kinds and ignored by ``"vgg"``.

    Shape of the returned block: ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``.

    Raises:
        ValueError: ``kind`` is not one of :data:`BLOCK_KINDS_3D`.
    """
    if kind == "vgg":
        return VGGBlock3d(in_channels, out_channels, norm)
    if kind == "sdn":
        return SDNBlock3d(in_channels, out_channels, state_size, directions, backend, norm)
    if kind == "residual_sdn":
        return ResidualSDNBlock3d(in_channels, out_channels, state_size, directions, backend, norm)
    raise ValueError(f"block kind {kind!r} is unknown; expected one of {BLOCK_KINDS_3D}")


def set_sdn3d_backend(module: nn.Module, backend: str) -> int:
    """Set the scan backend of every 3D SDN layer inside ``module``; return how many were set.

    Raises:
        ValueError: ``backend`` names no known backend.
    """
    resolve_backend3d(backend)
    count = 0
    for m in module.modules():
        if isinstance(m, SpatialDependencyLayer3d):
            m.backend = backend
            count += 1
    return count


__all__ = [
    "BLOCK_KINDS_3D",
    "NORMS_3D",
    "ResidualSDNBlock3d",
    "SDNBlock3d",
    "VGGBlock3d",
    "make_block3d",
    "make_norm3d",
    "set_sdn3d_backend",
]
