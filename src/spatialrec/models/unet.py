"""U-Net with optional SDN blocks per level (the paper's SDN-UNet), and helpers shared by the models.

Levels: level 0 is full resolution, level ``l`` is the resolution after ``l`` max-pools
(``1 / 2**l``). The encoder has one block per level ``0 .. depth``; the decoder has one block per
level ``depth-1 .. 0``, each after an x2 up-sampling and a concatenation ``[skip, up]``.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import count_sdn_layers, make_block
from ..ops import DirectionLike, normalize_directions, resolve_backend

PAD_MODES: tuple[str, ...] = ("reflect", "replicate", "constant")
"""How models pad inputs up to a multiple of ``2**depth`` (``"constant"`` pads with zeros)."""

SDN_BLOCK_KINDS: tuple[str, ...] = ("sdn", "residual_sdn")

LevelsLike = Union[str, Iterable[int]]


# ----------------------------------------------------------------------------- argument checks


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``; raise a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool; raise a TypeError naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; raise a ValueError naming ``name`` otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {tuple(choices)}")
    return value


def check_sdn_args(state_size: object, directions: object, backend: object) -> tuple[str, ...]:
    """Validate the SDN arguments every model takes, at construction; return the directions."""
    check_int("state_size", state_size)
    if isinstance(directions, (str, int)):
        raise TypeError(f"directions must be a sequence of directions such as ('right', 'down'), got {directions!r}")
    dirs = normalize_directions(directions)
    resolve_backend(backend)  # type: ignore[arg-type]
    return dirs


def parse_levels(name: str, levels: LevelsLike, valid: Sequence[int]) -> frozenset[int]:
    """Turn ``"all"``, ``"none"`` or an iterable of level indices into a set, checking the range.

    Raises:
        TypeError: ``levels`` is not a string or an iterable of ints.
        ValueError: a level is outside ``valid``.
    """
    if isinstance(levels, str):
        if levels == "all":
            return frozenset(valid)
        if levels == "none":
            return frozenset()
        raise ValueError(f"{name}={levels!r} is not valid; expected 'all', 'none' or an iterable of levels")
    if isinstance(levels, bool) or isinstance(levels, int):
        raise TypeError(f"{name} must be 'all', 'none' or an iterable of levels (e.g. (1, 2)), got {levels!r}")
    try:
        items = list(levels)
    except TypeError:
        raise TypeError(f"{name} must be 'all', 'none' or an iterable of levels, got {type(levels).__name__}") from None
    out = set()
    for lv in items:
        if isinstance(lv, bool) or not isinstance(lv, int):
            raise TypeError(f"{name} must contain ints, got {lv!r}")
        if lv not in valid:
            raise ValueError(f"{name} contains level {lv}; valid levels are {min(valid)}..{max(valid)}")
        out.add(lv)
    return frozenset(out)


# ----------------------------------------------------------------------------- input handling


def check_model_input(x: object, in_channels: int, min_size: int, model: str, depth: int) -> torch.Tensor:
    """Check a model input ``x: (B, in_channels, H, W)`` with ``H, W >= min_size``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: wrong number of dims or channels, or a side smaller than ``min_size``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} input must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{model} input must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{model} input must have a floating-point dtype, got {x.dtype}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} input has {x.shape[1]} channels, expected in_channels={in_channels} (shape {tuple(x.shape)})"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{model} input has an empty batch: shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"{model} input of spatial size (H, W)=({h}, {w}) is too small for depth={depth}: "
            f"each side must be >= 2**depth = {min_size} so that the deepest map is at least 1x1"
        )
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad ``x: (B, C, H, W)`` so that H and W are multiples of ``multiple``.

    The padding is split between both sides (the extra pixel, if odd, at the bottom/right), so
    the image stays centred. Reflection needs each pad to be smaller than the side, which holds
    whenever ``H, W >= multiple``.

    Returns:
        The padded tensor and ``(top, left, H, W)``, the window of the original image in it.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    if ph or pw:
        x = F.pad(x, (left, pw - left, top, ph - top), mode=mode)
    return x, (top, left, h, w)


def crop_window(x: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    """Cut ``window = (top, left, H, W)`` out of ``x: (B, C, H', W')`` -> ``(B, C, H, W)``."""
    top, left, h, w = window
    return x[..., top : top + h, left : left + w]


# ----------------------------------------------------------------------------- the U-Net


class UpBlock(nn.Module):
    """Decoder stage: x2 up-sampling, pad to the skip's size, concatenate ``[skip, up]``, block.

    Args:
        in_channels: channels of the deeper map (``2 * out_channels`` in a U-Net).
        out_channels: channels of the skip and of the output.
        block: ``"vgg"``, ``"sdn"`` or ``"residual_sdn"``.
        bilinear: bilinear x2 (``align_corners=True``) then a 1x1 convolution to
            ``in_channels // 2``; else a 2x2 stride-2 transposed convolution to ``in_channels // 2``.
        state_size, directions, backend: for the SDN block kinds.

    Shape:
        ``x: (B, in_channels, h, w)``, ``skip: (B, out_channels, H, W)`` with ``H ~ 2h``
        -> ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block: str = "vgg",
        bilinear: bool = True,
        state_size: int = 150,
        directions: Sequence[DirectionLike] = ("right", "down"),
        backend: str = "auto",
    ) -> None:
        super().__init__()
        half = in_channels // 2
        if bilinear:
            self.upsample: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                nn.Conv2d(in_channels, half, kernel_size=1),
            )
        else:
            self.upsample = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        self.block = make_block(block, out_channels + half, out_channels, state_size, directions, backend)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, h, w)``, ``skip: (B, C_out, H, W)`` -> ``(B, C_out, H, W)``."""
        up = self.upsample(x)
        dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
        if dh or dw:
            up = F.pad(up, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return self.block(torch.cat([skip, up], dim=1))


class UNet(nn.Module):
    """U-Net with VGG blocks, and SDN blocks at the levels you choose (SDN-UNet).

    Encoder: a block at level 0 (full resolution), then for each level ``l = 1 .. depth`` a 2x2
    max-pool and a block with ``base_width * 2**l`` channels. Decoder: for ``l = depth-1 .. 0``
    an x2 up-sampling (bilinear + 1x1 conv, or a transposed conv), concatenation ``[skip, up]``
    and a block back to ``base_width * 2**l`` channels. Head: a 1x1 convolution to
    ``num_classes`` logits.

    Any input size ``H, W >= 2**depth`` works: the input is padded (``pad_mode``) to a multiple
    of ``2**depth`` on both sides and the logits are cropped back to ``(H, W)``.

    Args:
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        depth: number of down-samplings (the published ``--n_layers``).
        base_width: channels at level 0, doubled per level (the published ``--feat_start``).
        bilinear: bilinear up-sampling + 1x1 conv (else a 2x2 transposed conv).
        encoder_sdn: encoder levels (``0 .. depth``) that use SDN blocks, or ``"all"``/``"none"``.
        decoder_sdn: decoder levels (``0 .. depth-1``) that use SDN blocks, or ``"all"``/``"none"``.
        sdn_block: ``"sdn"`` (:class:`~spatialrec.blocks.SDNBlock`) or ``"residual_sdn"``
            (:class:`~spatialrec.blocks.ResidualSDNBlock`) for those levels.
        state_size: ``S`` of every SDN layer (the paper: 150).
        directions: sweep directions of every SDN layer (the paper: ``("right", "down")``).
        backend: scan backend of every SDN layer.
        pad_mode: ``"reflect"`` (default), ``"replicate"`` or ``"constant"`` (zeros).

    Shape:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits.

    Example:
        >>> model = UNet(3, 1, depth=4, encoder_sdn=(1, 2, 3, 4), state_size=150)  # SDN-UNet
        >>> model(torch.randn(2, 3, 96, 128)).shape  # doctest: +SKIP
        torch.Size([2, 1, 96, 128])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_width: int = 32,
        *,
        bilinear: bool = True,
        encoder_sdn: LevelsLike = (),
        decoder_sdn: LevelsLike = (),
        sdn_block: str = "sdn",
        state_size: int = 150,
        directions: Sequence[DirectionLike] = ("right", "down"),
        backend: str = "auto",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.num_classes = check_int("num_classes", num_classes)
        self.depth = check_int("depth", depth)
        self.base_width = check_int("base_width", base_width)
        self.bilinear = check_bool("bilinear", bilinear)
        self.sdn_block = check_choice("sdn_block", sdn_block, SDN_BLOCK_KINDS)
        self.directions = check_sdn_args(state_size, directions, backend)
        self.state_size = state_size
        self.pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
        self.encoder_sdn = parse_levels("encoder_sdn", encoder_sdn, range(depth + 1))
        self.decoder_sdn = parse_levels("decoder_sdn", decoder_sdn, range(depth))
        self.widths = tuple(base_width * 2**lv for lv in range(depth + 1))

        def kind(is_sdn: bool) -> str:
            return sdn_block if is_sdn else "vgg"

        self.encoder = nn.ModuleList()
        for lv in range(depth + 1):
            c_in = in_channels if lv == 0 else self.widths[lv - 1]
            self.encoder.append(
                make_block(kind(lv in self.encoder_sdn), c_in, self.widths[lv], state_size, self.directions, backend)
            )
        # A hook for models that transform the deepest map (TransUNet puts its Transformer here).
        self.bottleneck: nn.Module = nn.Identity()
        # decoder[i] produces level depth-1-i: the published code's up-sampling stage i.
        self.decoder = nn.ModuleList(
            UpBlock(
                self.widths[lv + 1], self.widths[lv], kind(lv in self.decoder_sdn), bilinear,
                state_size, self.directions, backend,
            )  # fmt: skip
            for lv in reversed(range(depth))
        )
        self.head = nn.Conv2d(self.widths[0], num_classes, kernel_size=1)

    @property
    def min_size(self) -> int:
        """The smallest input side accepted: ``2**depth``."""
        return 2**self.depth

    def sdn_levels(self) -> dict[str, tuple[int, ...]]:
        """The levels that use SDN blocks: ``{"encoder": (...), "decoder": (...)}``, sorted."""
        return {"encoder": tuple(sorted(self.encoder_sdn)), "decoder": tuple(sorted(self.decoder_sdn))}

    def num_sdn_layers(self) -> int:
        """Number of SDN layers in the model (one per SDN block)."""
        return count_sdn_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, H, W)`` with ``H, W >= 2**depth`` -> logits ``(B, num_classes, H, W)``."""
        check_model_input(x, self.in_channels, self.min_size, type(self).__name__, self.depth)
        x, window = pad_to_multiple(x, self.min_size, self.pad_mode)
        h = self.encoder[0](x)
        skips = []
        for block in self.encoder[1:]:
            skips.append(h)
            h = block(F.max_pool2d(h, 2))
        h = self.bottleneck(h)
        for up, skip in zip(self.decoder, reversed(skips)):
            h = up(h, skip)
        return crop_window(self.head(h), window)

    @classmethod
    def from_published_args(
        cls,
        n_channels: int = 3,
        n_classes: int = 1,
        n_layers: int = 5,
        feat_start: int = 32,
        bilinear: bool = True,
        block: str = "vgg",
        sdn_b_enc: bool = False,
        sdn_b_dec: bool = False,
        sdn_n_layers: int = 3,
        **kwargs: object,
    ) -> "UNet":
        """Build the U-Net the published training script builds from its command-line flags.

        Args mirror ``--n_channels --n_classes --n_layers --feat_start --bilinear --block
        --sdn_b_enc --sdn_b_dec --sdn_n_layers`` (published defaults, except ``--block``, whose
        published default ``vgg_block`` is not a block it knows). ``kwargs`` go to
        :class:`UNet` (``state_size``, ``directions``, ``backend``, ``pad_mode``).
        See :func:`published_unet_levels` for the placement rule.

        Raises:
            ValueError: a flag combination the published script cannot build.
        """
        enc, dec, kind = published_unet_levels(n_layers, block, sdn_b_enc, sdn_b_dec, sdn_n_layers)
        return cls(
            n_channels, n_classes, depth=n_layers, base_width=feat_start, bilinear=bilinear,
            encoder_sdn=enc, decoder_sdn=dec, sdn_block=kind, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip


PUBLISHED_BLOCKS: dict[str, Optional[str]] = {"vgg": None, "vgg_sdn": "sdn", "vggres_sdn": "residual_sdn"}


def published_unet_levels(
    n_layers: int, block: str, sdn_b_enc: bool, sdn_b_dec: bool, sdn_n_layers: int
) -> tuple[frozenset[int], frozenset[int], str]:
    """Translate the published U-Net flags into ``(encoder_sdn, decoder_sdn, sdn_block)``.

    The published rule: with ``--block vgg``, down-sampling stage ``i`` of the encoder (counted
    from the first, ``i = 0 .. n_layers-1``) uses an SDN block when ``--sdn_b_enc`` and
    ``i <= sdn_n_layers``; up-sampling stage ``i`` of the decoder (counted from the deepest)
    likewise with ``--sdn_b_dec``. Down stage ``i`` is encoder level ``i + 1``; up stage ``i``
    is decoder level ``n_layers - 1 - i``. The full-resolution stem (encoder level 0) is a
    plain block. With ``--block vgg_sdn`` (or ``vggres_sdn``) and both flags off, every block,
    the stem included, is an SDN (residual SDN) block.

    Raises:
        ValueError: ``block`` is unknown, or an SDN ``block`` is combined with ``sdn_b_enc``/
            ``sdn_b_dec`` (the published script then looks up ``"vgg_sdn_sdn"`` and fails).
    """
    check_int("n_layers", n_layers)
    check_bool("sdn_b_enc", sdn_b_enc)
    check_bool("sdn_b_dec", sdn_b_dec)
    if isinstance(sdn_n_layers, bool) or not isinstance(sdn_n_layers, int):
        raise TypeError(f"sdn_n_layers must be an int, got {sdn_n_layers!r}")
    if block not in PUBLISHED_BLOCKS:
        raise ValueError(f"block={block!r} is not a published block; expected one of {tuple(PUBLISHED_BLOCKS)}")
    whole = PUBLISHED_BLOCKS[block]
    if whole is not None:
        if sdn_b_enc or sdn_b_dec:
            raise ValueError(
                f"block={block!r} with sdn_b_enc/sdn_b_dec is not a published configuration (the published "
                f"script looks up '{block}_sdn' and fails); use block='vgg' with the flags"
            )
        return frozenset(range(n_layers + 1)), frozenset(range(n_layers)), whole
    stages = [i for i in range(n_layers) if i <= sdn_n_layers]
    enc = frozenset(i + 1 for i in stages) if sdn_b_enc else frozenset()
    dec = frozenset(n_layers - 1 - i for i in stages) if sdn_b_dec else frozenset()
    return enc, dec, "sdn"


__all__ = ["PAD_MODES", "UNet", "UpBlock", "published_unet_levels"]
