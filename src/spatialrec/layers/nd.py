"""The ``torch.nn`` classes for a number of spatial dimensions: one lookup instead of twin modules.

Example:
    >>> conv_cls(3).__name__, type(norm_layer("instance", 3, 8)).__name__
    ('Conv3d', 'InstanceNorm3d')
"""

from __future__ import annotations

from typing import Callable, Union

from torch import nn

from ..checks import check_choice, check_spatial_dims

NORMS: tuple[str, ...] = ("batch", "instance")
"""The normalisations the blocks support: ``BatchNormNd`` or ``InstanceNormNd(affine=True)``."""

DEFAULT_NORM: dict[int, str] = {2: "batch", 3: "instance"}
"""Batch statistics in 2D (the paper); instance normalisation in 3D, where a batch holds one or
two patches and batch statistics are too noisy."""

ConvNd = Union[nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d]

_CONV: dict[int, type[ConvNd]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[ConvNd]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}

CONV_TYPES: tuple[type[ConvNd], ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)
"""Every plain convolution class of a supported dimension (``Conv2d``, ``Conv3d`` and transposed)."""


def conv_cls(spatial_dims: int, transposed: bool = False) -> Callable[..., ConvNd]:
    """``nn.Conv2d``/``nn.Conv3d`` (``nn.ConvTranspose2d``/``3d`` when ``transposed``).

    Typed as a constructor of any of them: the geometry tuples' length depends on ``spatial_dims``."""
    return (_CONV_T if transposed else _CONV)[check_spatial_dims(spatial_dims)]


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """``"batch"`` -> ``BatchNormNd(channels)``; ``"instance"`` -> ``InstanceNormNd(channels, affine=True)``."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return _BATCH_NORM[check_spatial_dims(spatial_dims)](channels)
    return _INSTANCE_NORM[check_spatial_dims(spatial_dims)](channels, affine=True)


def interpolation_mode(spatial_dims: int) -> str:
    """The linear interpolation mode of ``F.interpolate``: ``"bilinear"`` or ``"trilinear"``."""
    return {2: "bilinear", 3: "trilinear"}[check_spatial_dims(spatial_dims)]


__all__ = ["CONV_TYPES", "ConvNd", "DEFAULT_NORM", "NORMS", "conv_cls", "interpolation_mode", "norm_layer"]
