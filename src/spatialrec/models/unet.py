"""U-Net with optional SDN blocks per level (the paper's SDN-UNet), for maps and volumes.

Level ``l`` is the resolution after ``l`` max-pools (``1 / 2**l``; level 0 is full resolution).
``spatial_dims=3`` builds the same network from 3D convolutions, pools and SDN layers
(SDN-UNet-3D); the registry entries ``unet3d`` and ``sdn_unet3d`` give it small, CPU-friendly
defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from ..blocks import UPSAMPLE_MODES, UpBlock, make_block, set_sdn_cell
from ..checks import check_bool, check_choice, check_int
from ..layers import PUBLISHED_CELL
from ..layers.nd import conv_cls
from ..ops import DirectionLike
from .common import MAX_POOL, LevelsLike, UNetFamily, check_model_input, crop_window, pad_to_multiple, parse_levels
from .registry import register_model

#: Values of ``UNet(bottleneck_context=...)``: ``"none"`` or ``"se"`` (:class:`SqueezeExcite`).
BOTTLENECK_CONTEXTS = ("none", "se")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: a global-statistic path, not recurrence.

    Averages every channel over the whole map (the squeeze), passes the ``C`` averages through a
    two-layer MLP (``C -> hidden -> C``, ReLU between) and multiplies each channel by the sigmoid of
    its output (the excitation). Every output pixel then depends on every input pixel, but only
    through ``C`` numbers that forget where anything was: it can bring in *what* is in the image
    (a grey level, a count), not *where* it is relative to the pixel.

    Args:
        channels: ``C``, the channels of the map.
        reduction: ``hidden = max(1, C // reduction)``; default 4.

    Shape:
        ``(B, C, *spatial) -> (B, C, *spatial)``, any number of spatial dimensions.

    Example:
        >>> SqueezeExcite(8)(torch.randn(2, 8, 5, 7)).shape
        torch.Size([2, 8, 5, 7])
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = check_int("channels", channels)
        self.reduction = check_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` -> ``x`` times per-channel gates in ``(0, 1)``, same shape."""
        if x.dim() < 3 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, *spatial), got shape {tuple(x.shape)}")
        gates = torch.sigmoid(self.mlp(x.flatten(2).mean(-1)))  # (B, C)
        return x * gates.reshape(*gates.shape, *([1] * (x.dim() - 2)))


class UNet(UNetFamily):
    """U-Net with VGG blocks, and SDN blocks at the levels you choose (SDN-UNet), in 2D or 3D.

    Encoder: a block at level 0 (full resolution), then for each level ``l = 1 .. depth`` a 2x
    max-pool and a block with ``base_width * 2**l`` channels. Decoder: for ``l = depth-1 .. 0``
    an x2 up-sampling (linear interpolation + 1x1 conv, or a transposed conv), concatenation
    ``[skip, up]`` and a block back to ``base_width * 2**l`` channels. Head: a 1x1 convolution
    to ``num_classes`` logits.

    Any input size with every side ``>= 2**depth`` works: the input is padded (``pad_mode``) to
    a multiple of ``2**depth`` on every axis and the logits are cropped back.

    Args:
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        depth: number of down-samplings (the published ``--n_layers``).
        base_width: channels at level 0, doubled per level (the published ``--feat_start``).
        upsample: ``"interpolate"`` (bilinear/trilinear x2 + 1x1 conv, default) or
            ``"transposed"`` (a 2x stride-2 transposed conv).
        encoder_sdn: encoder levels (``0 .. depth``) that use SDN blocks, or ``"all"``/``"none"``.
        decoder_sdn: decoder levels (``0 .. depth-1``) that use SDN blocks, or ``"all"``/``"none"``.
        sdn_block: ``"sdn"`` (:class:`~spatialrec.blocks.SDNBlock`) or ``"residual_sdn"``
            (:class:`~spatialrec.blocks.ResidualSDNBlock`) for those levels.
        state_size: ``S`` of every SDN layer (default 150 in 2D, the paper's; 32 in 3D).
        directions: sweep directions of every SDN layer (default ``("right", "down")``; in 3D
            ``("right", "down", "in")``).
        backend: scan backend of every SDN layer.
        pad_mode: ``"reflect"`` (default), ``"replicate"`` or ``"constant"`` (zeros).
        spatial_dims: 2 (``(B, C, H, W)`` images, default) or 3 (``(B, C, D, H, W)`` volumes).
        norm: ``"batch"`` or ``"instance"``; default batch in 2D, instance in 3D.
        bottleneck_context: ``"none"`` (default) or ``"se"``: a :class:`SqueezeExcite` block on the
            deepest map, a global-average-pool path (the pooling baseline ``pool_unet``).
        context_reduction: the SE block's ``reduction``; default 4.

    Shape:
        ``(B, in_channels, *spatial) -> (B, num_classes, *spatial)`` logits.

    Example:
        >>> model = UNet(3, 1, depth=4, encoder_sdn=(1, 2, 3, 4), state_size=150)  # SDN-UNet
        >>> model(torch.randn(1, 3, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
        >>> UNet(1, 2, depth=2, base_width=4, encoder_sdn=(2,), state_size=4, spatial_dims=3)(
        ...     torch.randn(1, 1, 9, 10, 11)).shape
        torch.Size([1, 2, 9, 10, 11])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_width: int = 32,
        *,
        upsample: str = "interpolate",
        encoder_sdn: LevelsLike = (),
        decoder_sdn: LevelsLike = (),
        sdn_block: str = "sdn",
        state_size: Optional[int] = None,
        directions: Optional[Sequence[DirectionLike]] = None,
        backend: str = "auto",
        pad_mode: str = "reflect",
        spatial_dims: int = 2,
        norm: Optional[str] = None,
        bottleneck_context: str = "none",
        context_reduction: int = 4,
    ) -> None:
        super().__init__()
        sdn = self._set_options(
            in_channels, num_classes, depth, base_width, encoder_sdn=encoder_sdn, sdn_block=sdn_block,
            state_size=state_size, directions=directions, backend=backend, pad_mode=pad_mode,
            spatial_dims=spatial_dims, norm=norm,
        )  # fmt: skip
        self.upsample = check_choice("upsample", upsample, UPSAMPLE_MODES)
        self.decoder_sdn = parse_levels("decoder_sdn", decoder_sdn, range(depth))

        def kind(is_sdn: bool) -> str:
            return sdn_block if is_sdn else "vgg"

        self.encoder = nn.ModuleList(
            make_block(kind(lv in self.encoder_sdn), in_channels if lv == 0 else self.widths[lv - 1], self.widths[lv], **sdn)
            for lv in range(depth + 1)
        )
        # A hook for models that transform the deepest map (TransUNet puts its Transformer here).
        self.bottleneck_context = check_choice("bottleneck_context", bottleneck_context, BOTTLENECK_CONTEXTS)
        self.bottleneck: nn.Module = (
            SqueezeExcite(self.widths[depth], context_reduction) if bottleneck_context == "se" else nn.Identity()
        )
        # decoder[i] produces level depth-1-i: the published code's up-sampling stage i.
        self.decoder = nn.ModuleList(
            UpBlock(self.widths[lv + 1], self.widths[lv], kind(lv in self.decoder_sdn), upsample, **sdn)
            for lv in reversed(range(depth))
        )
        self.head = conv_cls(spatial_dims)(self.widths[0], num_classes, kernel_size=1)

    def sdn_levels(self) -> dict[str, tuple[int, ...]]:
        """The levels that use SDN blocks: ``{"encoder": (...), "decoder": (...)}``, sorted."""
        return {"encoder": tuple(sorted(self.encoder_sdn)), "decoder": tuple(sorted(self.decoder_sdn))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_channels, *spatial)``, every side ``>= 2**depth`` -> logits ``(B, num_classes, *spatial)``."""
        check_model_input(x, self.in_channels, self.spatial_dims, self.depth, type(self).__name__, self.head.weight.dtype)
        x, window = pad_to_multiple(x, self.min_size, self.pad_mode)
        pool = MAX_POOL[self.spatial_dims]
        h = self.encoder[0](x)
        skips = []
        for block in self.encoder[1:]:
            skips.append(h)
            h = block(pool(h, 2))
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
        upsample = "interpolate" if check_bool("bilinear", bilinear) else "transposed"
        model = cls(
            n_channels, n_classes, depth=n_layers, base_width=feat_start, upsample=upsample,
            encoder_sdn=enc, decoder_sdn=dec, sdn_block=kind, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        set_sdn_cell(model, **PUBLISHED_CELL)  # the published layer, exactly
        return model



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
    n_layers = check_int("n_layers", n_layers)
    check_bool("sdn_b_enc", sdn_b_enc)
    check_bool("sdn_b_dec", sdn_b_dec)
    sdn_n_layers = check_int("sdn_n_layers", sdn_n_layers, minimum=None)  # any int: stages i <= it get SDN
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


class UNet3d(UNet):
    """:class:`UNet` with ``spatial_dims=3`` and the volumetric defaults of ``unet3d``: ``depth=3``,
    ``base_width=16``, instance normalisation, ``S=32``, sweeps right, down, in."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 3, base_width: int = 16, **kwargs: Any) -> None:
        super().__init__(in_channels, num_classes, depth, base_width, spatial_dims=3, **kwargs)


def default_sdn_levels3d(depth: int) -> tuple[int, ...]:
    """The encoder levels that ``sdn_unet3d`` puts SDN blocks at: the two coarsest, ``depth-1`` and
    ``depth`` (just ``depth`` when ``depth == 1`` would put one at full resolution)."""
    check_int("depth", depth)
    return tuple(lv for lv in (depth - 1, depth) if lv >= 1)


# ----------------------------------------------------------------------------- registry entries


@register_model(spatial_dims=2)
def unet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNet:
    """Plain U-Net: ``depth=4``, ``base_width=32`` (32..512), bilinear up-sampling, VGG blocks."""
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "upsample": "interpolate"}
    return UNet(in_channels, num_classes, **(kw | overrides))


@register_model(spatial_dims=2)
def sdn_unet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNet:
    """SDN-UNet: the U-Net with SDN blocks (S=150, right then down) in the encoder.

    The configuration the published script builds with ``--block vgg --n_layers 4
    --feat_start 32 --bilinear True --sdn_b_enc True --sdn_b_dec False`` and its default
    ``--sdn_n_layers 3``: SDN blocks at encoder levels 1-4 (every down-sampling stage), plain
    VGG blocks at level 0 and in the decoder. Overriding ``depth`` keeps the published rule
    (levels ``1 .. min(depth, 4)``) unless ``encoder_sdn`` is given.
    """
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "upsample": "interpolate", "sdn_block": "sdn", "state_size": 150}
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        kw["encoder_sdn"] = published_unet_levels(check_int("depth", kw["depth"]), "vgg", True, False, 3)[0]
    return UNet(in_channels, num_classes, **kw)


@register_model(spatial_dims=2)
def pool_unet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNet:
    """Pooling baseline: :func:`unet` with a squeeze-and-excitation block on the deepest map
    (``bottleneck_context="se"``).

    Its only long-range path is a global statistic (per-channel averages over the whole map
    gating the channels), not recurrence and not attention: it can use *what* the image holds,
    not *where*. The benchmark's control for tasks a global statistic solves.

    Example:
        >>> m = pool_unet(1, 1, depth=2, base_width=4)
        >>> m(torch.randn(1, 1, 20, 28)).shape, type(m.bottleneck).__name__
        (torch.Size([1, 1, 20, 28]), 'SqueezeExcite')
    """
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "upsample": "interpolate", "bottleneck_context": "se"}
    return UNet(in_channels, num_classes, **(kw | overrides))


@register_model(spatial_dims=3)
def unet3d(in_channels: int = 1, num_classes: int = 1, **overrides: Any) -> UNet:
    """Plain 3D U-Net: ``depth=3``, ``base_width=16`` (16..128), trilinear up-sampling,
    InstanceNorm conv blocks; about 1.3 M parameters. Small enough to train on ``64^3``
    patches on a CPU; on a GPU raise ``base_width`` and the patch size."""
    kw: dict[str, Any] = {"depth": 3, "base_width": 16, "upsample": "interpolate", "norm": "instance"}
    return UNet(in_channels, num_classes, spatial_dims=3, **(kw | overrides))


@register_model(spatial_dims=3)
def sdn_unet3d(in_channels: int = 1, num_classes: int = 1, **overrides: Any) -> UNet:
    """SDN-UNet-3D: :func:`unet3d` with 3D SDN blocks (``S=32``, sweeps right, down, in) at the
    two coarsest encoder levels (``depth-1`` and ``depth``: 1/4 and 1/8 resolution), where they
    see the whole patch at a small memory cost. Overriding ``depth`` keeps that rule unless
    ``encoder_sdn`` is given."""
    kw: dict[str, Any] = {
        "depth": 3, "base_width": 16, "upsample": "interpolate", "norm": "instance", "sdn_block": "sdn", "state_size": 32,
    }  # fmt: skip
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        kw["encoder_sdn"] = default_sdn_levels3d(kw["depth"])
    return UNet(in_channels, num_classes, spatial_dims=3, **kw)


__all__ = ["BOTTLENECK_CONTEXTS", "SqueezeExcite", "UNet", "UNet3d", "default_sdn_levels3d", "published_unet_levels"]
