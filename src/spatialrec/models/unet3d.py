"""Volumetric U-Net with optional 3D SDN blocks per level (SDN-UNet-3D).

Levels: level 0 is full resolution, level ``l`` the resolution after ``l`` 2x2x2 max-pools. The
encoder has one block per level ``0 .. depth``; the decoder one block per level
``depth-1 .. 0``, each after an x2 up-sampling and a concatenation ``[skip, up]``.

Memory is the constraint in 3D, so the defaults are small (``depth=3``, ``base_width=16``, 3D
SDN layers with ``S=32`` only at the two coarsest encoder levels, where a ``64^3`` patch is
``16^3`` and ``8^3``): a ``64^3`` single-channel patch trains with batch 2 in well under 2 GB
on a 2-core CPU, and a GPU can raise ``base_width``/``state_size``/patch size from there.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks3d import NORMS_3D, make_block3d
from ..layers.sdn3d import DEFAULT_DIRECTIONS_3D, SpatialDependencyLayer3d
from ..ops import DirectionLike, normalize_directions3d, resolve_backend3d
from .unet import LevelsLike, check_choice, check_int, parse_levels

PAD_MODES_3D: tuple[str, ...] = ("reflect", "replicate", "constant")
"""How the 3D models pad inputs up to a multiple of ``2**depth`` (``"constant"`` pads with zeros)."""

SDN_BLOCK_KINDS_3D: tuple[str, ...] = ("sdn", "residual_sdn")



def pad_to_multiple3d(
    x: torch.Tensor, multiple: int, mode: str
) -> tuple[torch.Tensor, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """Pad ``x: (B, C, D, H, W)`` so that D, H and W are multiples of ``multiple``.

    The padding is split between both sides of each axis (the odd voxel at the far side), so the
    volume stays centred.

    Returns:
        The padded tensor and the window ``((start_d, D), (start_h, H), (start_w, W))`` of the
        original volume inside it.
    """
    sizes = x.shape[-3:]
    pads = [(-s) % multiple for s in sizes]
    starts = [p // 2 for p in pads]
    if any(pads):
        # F.pad lists the last axis first.
        flat = []
        for p, st in zip(reversed(pads), reversed(starts)):
            flat += [st, p - st]
        x = F.pad(x, flat, mode=mode)
    window = tuple((st, s) for st, s in zip(starts, sizes))
    return x, window  # type: ignore[return-value]


def crop_window3d(x: torch.Tensor, window: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]) -> torch.Tensor:
    """Cut ``window`` (from :func:`pad_to_multiple3d`) out of ``x: (B, C, D', H', W')`` -> ``(B, C, D, H, W)``."""
    (d0, d), (h0, h), (w0, w) = window
    return x[..., d0 : d0 + d, h0 : h0 + h, w0 : w0 + w]


class UpBlock3d(nn.Module):
    """Decoder stage: x2 up-sampling, pad to the skip's size, concatenate ``[skip, up]``, block.

    Args:
        in_channels: channels of the deeper map (``2 * out_channels`` in a U-Net).
        out_channels: channels of the skip and of the output.
        block: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.
        trilinear: trilinear x2 (``align_corners=True``) then a 1x1x1 convolution to
            ``in_channels // 2``; else a 2x2x2 stride-2 transposed convolution.
        state_size, directions, backend, norm: for the blocks.

    Shape:
        ``x: (B, in_channels, d, h, w)``, ``skip: (B, out_channels, D, H, W)`` with ``D ~ 2d``
        -> ``(B, out_channels, D, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block: str = "vgg",
        trilinear: bool = True,
        state_size: int = 32,
        directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
        backend: str = "auto",
        norm: str = "instance",
    ) -> None:
        super().__init__()
        half = in_channels // 2
        if trilinear:
            self.upsample: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True),
                nn.Conv3d(in_channels, half, kernel_size=1),
            )
        else:
            self.upsample = nn.ConvTranspose3d(in_channels, half, kernel_size=2, stride=2)
        self.block = make_block3d(block, out_channels + half, out_channels, state_size, directions, backend, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, d, h, w)``, ``skip: (B, C_out, D, H, W)`` -> ``(B, C_out, D, H, W)``."""
        up = self.upsample(x)
        diff = [s - u for s, u in zip(skip.shape[-3:], up.shape[-3:])]
        if any(diff):
            flat = []
            for dd in reversed(diff):
                flat += [dd // 2, dd - dd // 2]
            up = F.pad(up, flat)
        return self.block(torch.cat([skip, up], dim=1))


class UNet3d(nn.Module):
    """Volumetric U-Net with conv blocks, and 3D SDN blocks at the levels you choose (SDN-UNet-3D).

    Encoder: a block at level 0, then for each level ``l = 1 .. depth`` a 2x2x2 max-pool and a
    block with ``base_width * 2**l`` channels. Decoder: for ``l = depth-1 .. 0`` an x2
    up-sampling (trilinear + 1x1x1 conv, or a transposed conv), concatenation ``[skip, up]`` and
    a block back to ``base_width * 2**l`` channels. Head: a 1x1x1 convolution to ``num_classes``
    logits.

    Any input size ``D, H, W >= 2**depth`` works, odd ones included: the input is padded
    (``pad_mode``) to a multiple of ``2**depth`` on every axis and the logits are cropped back.

    Args:
        in_channels: channels of the input volume (1 for CT).
        num_classes: channels of the output logits.
        depth: number of down-samplings (default 3).
        base_width: channels at level 0, doubled per level (default 16).
        trilinear: trilinear up-sampling + 1x1x1 conv (else a 2x2x2 transposed conv).
        encoder_sdn: encoder levels (``0 .. depth``) with SDN blocks, or ``"all"``/``"none"``.
        decoder_sdn: decoder levels (``0 .. depth-1``) with SDN blocks, or ``"all"``/``"none"``.
        sdn_block: ``"sdn"`` or ``"residual_sdn"`` for those levels.
        state_size: ``S`` of every 3D SDN layer (default 32).
        directions: 3D sweep directions of every SDN layer (default ``("right", "down", "in")``).
        backend: scan backend of every SDN layer.
        norm: ``"instance"`` (default; robust at batch 1-2) or ``"batch"``.
        pad_mode: ``"reflect"`` (default), ``"replicate"`` or ``"constant"`` (zeros).

    Shape:
        ``(B, in_channels, D, H, W) -> (B, num_classes, D, H, W)`` logits.

    Example:
        >>> model = UNet3d(1, 2, depth=2, base_width=4, encoder_sdn=(2,), state_size=4)
        >>> model(torch.randn(1, 1, 9, 10, 11)).shape
        torch.Size([1, 2, 9, 10, 11])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 3,
        base_width: int = 16,
        *,
        trilinear: bool = True,
        encoder_sdn: LevelsLike = (),
        decoder_sdn: LevelsLike = (),
        sdn_block: str = "sdn",
        state_size: int = 32,
        directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
        backend: str = "auto",
        norm: str = "instance",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.num_classes = check_int("num_classes", num_classes)
        self.depth = check_int("depth", depth)
        self.base_width = check_int("base_width", base_width)
        if not isinstance(trilinear, bool):
            raise TypeError(f"trilinear must be a bool, got {type(trilinear).__name__} {trilinear!r}")
        self.trilinear = trilinear
        self.sdn_block = check_choice("sdn_block", sdn_block, SDN_BLOCK_KINDS_3D)
        self.state_size = check_int("state_size", state_size)
        if isinstance(directions, (str, int)):
            raise TypeError(
                f"directions must be a sequence of directions such as ('right', 'down', 'in'), got {directions!r}"
            )
        self.directions = normalize_directions3d(directions)
        resolve_backend3d(backend)
        self.norm = check_choice("norm", norm, NORMS_3D)
        self.pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES_3D)
        self.encoder_sdn = parse_levels("encoder_sdn", encoder_sdn, range(depth + 1))
        self.decoder_sdn = parse_levels("decoder_sdn", decoder_sdn, range(depth))
        self.widths = tuple(base_width * 2**lv for lv in range(depth + 1))

        def kind(is_sdn: bool) -> str:
            return sdn_block if is_sdn else "vgg"

        self.encoder = nn.ModuleList()
        for lv in range(depth + 1):
            c_in = in_channels if lv == 0 else self.widths[lv - 1]
            self.encoder.append(
                make_block3d(
                    kind(lv in self.encoder_sdn), c_in, self.widths[lv], state_size, self.directions, backend, norm
                )
            )
        # decoder[i] produces level depth-1-i.
        self.decoder = nn.ModuleList(
            UpBlock3d(
                self.widths[lv + 1], self.widths[lv], kind(lv in self.decoder_sdn), trilinear,
                state_size, self.directions, backend, norm,
            )  # fmt: skip
            for lv in reversed(range(depth))
        )
        self.head = nn.Conv3d(self.widths[0], num_classes, kernel_size=1)

    @property
    def min_size(self) -> int:
        """The smallest input side accepted: ``2**depth``."""
        return 2**self.depth

    def sdn_levels(self) -> dict[str, tuple[int, ...]]:
        """The levels that use SDN blocks: ``{"encoder": (...), "decoder": (...)}``, sorted."""
        return {"encoder": tuple(sorted(self.encoder_sdn)), "decoder": tuple(sorted(self.decoder_sdn))}

    def num_sdn_layers(self) -> int:
        """Number of 3D SDN layers in the model (one per SDN block)."""
        return sum(isinstance(m, SpatialDependencyLayer3d) for m in self.modules())

    def _check_input(self, x: object) -> torch.Tensor:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} input must be a torch.Tensor of shape (B, C, D, H, W), got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(f"{name} input must have shape (B, C, D, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} input must have a floating-point dtype, got {x.dtype}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} input has {x.shape[1]} channels, expected in_channels={self.in_channels} "
                f"(shape {tuple(x.shape)})"
            )
        if x.shape[0] < 1:
            raise ValueError(f"{name} input has an empty batch: shape {tuple(x.shape)}")
        if min(x.shape[-3:]) < self.min_size:
            raise ValueError(
                f"{name} input of spatial size (D, H, W)={tuple(x.shape[-3:])} is too small for "
                f"depth={self.depth}: each side must be >= 2**depth = {self.min_size}"
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, D, H, W)``, sides ``>= 2**depth`` -> logits ``(B, num_classes, D, H, W)``."""
        self._check_input(x)
        x, window = pad_to_multiple3d(x, self.min_size, self.pad_mode)
        h = self.encoder[0](x)
        skips = []
        for block in self.encoder[1:]:
            skips.append(h)
            h = block(F.max_pool3d(h, 2))
        for up, skip in zip(self.decoder, reversed(skips)):
            h = up(h, skip)
        return crop_window3d(self.head(h), window)


def default_sdn_levels3d(depth: int) -> tuple[int, ...]:
    """The encoder levels that ``sdn_unet3d`` puts SDN blocks at: the two coarsest, ``depth-1`` and
    ``depth`` (just ``depth`` when ``depth == 1`` would put one at full resolution)."""
    check_int("depth", depth)
    return tuple(lv for lv in (depth - 1, depth) if lv >= 1)




# ----------------------------------------------------------------------------- registry entries

from .registry import register_model  # noqa: E402  (the registry module never imports this one)


@register_model
def unet3d(in_channels: int = 1, num_classes: int = 1, **overrides: Any) -> UNet3d:
    """Plain 3D U-Net: ``depth=3``, ``base_width=16`` (16..128), trilinear up-sampling,
    InstanceNorm conv blocks; about 1.1 M parameters. Small enough to train on ``64^3``
    patches on a CPU; on a GPU raise ``base_width`` and the patch size."""
    kw: dict[str, Any] = {"depth": 3, "base_width": 16, "trilinear": True, "norm": "instance"}
    kw.update(overrides)
    return UNet3d(in_channels, num_classes, **kw)


@register_model
def sdn_unet3d(in_channels: int = 1, num_classes: int = 1, **overrides: Any) -> UNet3d:
    """SDN-UNet-3D: :func:`unet3d` with 3D SDN blocks (``S=32``, sweeps right, down, in) at the
    two coarsest encoder levels (``depth-1`` and ``depth``: 1/4 and 1/8 resolution), where they
    see the whole patch at a small memory cost. Overriding ``depth`` keeps that rule unless
    ``encoder_sdn`` is given."""
    kw: dict[str, Any] = {
        "depth": 3, "base_width": 16, "trilinear": True, "norm": "instance", "sdn_block": "sdn", "state_size": 32,
    }  # fmt: skip
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        kw["encoder_sdn"] = default_sdn_levels3d(kw["depth"])
    return UNet3d(in_channels, num_classes, **kw)


__all__ = [
    "PAD_MODES_3D",
    "UNet3d",
    "UpBlock3d",
    "crop_window3d",
    "default_sdn_levels3d",
    "pad_to_multiple3d",
    "sdn_unet3d",
    "unet3d",
]
