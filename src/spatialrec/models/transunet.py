"""TransUNet-style hybrid: a CNN encoder, a Vision-Transformer bottleneck, a cascaded decoder.

With SDN blocks in the decoder (and optionally in the high-resolution encoder levels) it holds
both kinds of long-range modelling in one network: global self-attention on the coarsest map,
spatial recurrence on the finer ones (the SDN-Transformer hybrid).
"""

from __future__ import annotations

import math
from typing import Any, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..checks import check_float, check_int, check_size
from ..ops.library import tracing
from .registry import register_model
from .unet import UNet


class TransformerLayer(nn.Module):
    """Pre-norm Transformer encoder layer: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        dim: token width.
        num_heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        dropout: dropout after the attention projection and in the MLP.
        attention_dropout: dropout on the attention weights.

    Shape:
        ``(B, N, dim) -> (B, N, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=attention_dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, N, dim)`` -> ``(B, N, dim)``."""
        y = self.norm1(x)
        x = x + self.drop(self.attn(y, y, y, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class TransformerBottleneck(nn.Module):
    """A Vision Transformer on a feature map, one token per pixel, back to a feature map.

    ``tokens = Conv1x1(x) + pos`` (learned position embeddings laid out on ``grid_size``,
    bilinearly resized when the map has another size), ``num_layers`` pre-norm Transformer
    layers, a final LayerNorm, then ``Conv3x3 -> BN -> ReLU`` back to ``channels``.

    Args:
        channels: channels of the map in and out.
        dim, num_layers, num_heads, mlp_ratio, dropout, attention_dropout: the Transformer.
        grid_size: ``(h, w)`` of the position-embedding grid (the map size at the design
            input size).

    Shape:
        ``(B, channels, h, w) -> (B, channels, h, w)``, any ``h, w``.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        attention_dropout: float,
        grid_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.empty(1, dim, *grid_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(dim, num_heads, mlp_ratio, dropout, attention_dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Sequential(
            nn.Conv2d(dim, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The position embeddings for an ``h x w`` map: ``(1, dim, h, w)``.

        In eager code the grid itself at its own size. A traced program (``torch.export``,
        ``torch.compile``, ONNX) always resizes: a branch on the size would be decided once at
        trace time and guard the program against every size that takes the other branch (the
        model's design size, for a program exported at another size). Bilinear resizing to the
        grid's own size (half-pixel centres, scale 1) returns the grid exactly, so both paths
        give the same values and gradients.
        """
        pos: torch.Tensor = self.pos_embed
        if tracing() or pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, channels, h, w)`` -> ``(B, channels, h, w)``."""
        h, w = x.shape[-2:]
        t = self.pos_drop(self.embed(x) + self.position_embedding(h, w))
        t = rearrange(t, "b d h w -> b (h w) d")
        for layer in self.layers:
            t = layer(t)
        t = rearrange(self.norm(t), "b (h w) d -> b d h w", h=h, w=w)
        return self.project(t)


class TransUNet(UNet):
    """TransUNet-style hybrid: the :class:`UNet` encoder/decoder with a Transformer on the deepest map.

    Encoder: VGG blocks and max-pools as in :class:`UNet` down to level ``depth``
    (``1 / 2**depth`` resolution; TransUNet's 1/16 for ``depth=4``). Bottleneck:
    :class:`TransformerBottleneck`, one token per pixel of that map (TransUNet's patch size 1
    on CNN features). Decoder: cascaded x2 up-sampling with skip connections from every encoder
    level, as in :class:`UNet`. Unlike the original, the CNN encoder is the U-Net's VGG encoder
    (not a ResNet-50), so TransUNet and UNet differ only by the Transformer.

    SDN blocks go where ``decoder_sdn`` / ``encoder_sdn`` say (see :class:`UNet`); with SDN in
    the decoder this is the SDN-Transformer hybrid.

    Args:
        in_channels, num_classes, depth, base_width: as for :class:`UNet`.
        img_size: the input size ``(H, W)`` (or one int) the position embeddings are laid out
            for; other sizes interpolate them.
        transformer_dim: token width.
        transformer_layers: number of Transformer layers.
        transformer_heads: attention heads (must divide ``transformer_dim``).
        mlp_ratio: MLP hidden width / ``transformer_dim``.
        dropout: dropout in the Transformer (after attention, in the MLP, on the embeddings).
        attention_dropout: dropout on attention weights.
        **unet_kwargs: the other arguments of :class:`UNet` (``upsample``, ``encoder_sdn``,
            ``decoder_sdn``, ``sdn_block``, ``state_size``, ``directions``, ``backend``,
            ``pad_mode``, ``norm``); 2D only.

    Shape:
        ``(B, in_channels, H, W) -> (B, num_classes, H, W)`` logits, any ``H, W >= 2**depth``.

    Example:
        >>> model = TransUNet(1, 1, img_size=(128, 256), decoder_sdn=(1, 2, 3))  # SDN hybrid
        >>> model(torch.randn(1, 1, 128, 256)).shape
        torch.Size([1, 1, 128, 256])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_width: int = 32,
        *,
        img_size: Union[int, tuple[int, int]] = 128,
        transformer_dim: int = 256,
        transformer_layers: int = 4,
        transformer_heads: int = 8,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        **unet_kwargs: Any,
    ) -> None:
        if "spatial_dims" in unet_kwargs and unet_kwargs["spatial_dims"] != 2:
            raise ValueError(f"TransUNet is 2D only (position embeddings on an (H, W) grid), got spatial_dims={unet_kwargs['spatial_dims']!r}")
        super().__init__(in_channels, num_classes, depth, base_width, **unet_kwargs)
        img_h, img_w = check_size("img_size", img_size, 2, 1)
        check_int("transformer_dim", transformer_dim)
        check_int("transformer_layers", transformer_layers)
        check_int("transformer_heads", transformer_heads)
        if transformer_dim % transformer_heads:
            raise ValueError(
                f"transformer_dim={transformer_dim} must be divisible by transformer_heads={transformer_heads}"
            )
        check_float("mlp_ratio", mlp_ratio, 0.0, low_open=True)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_float("attention_dropout", attention_dropout, 0.0, 1.0, high_open=True)
        scale = 2**depth
        self.img_size = (img_h, img_w)
        self.grid_size = (math.ceil(img_h / scale), math.ceil(img_w / scale))
        self.bottleneck = TransformerBottleneck(
            self.widths[-1], transformer_dim, transformer_layers, transformer_heads, float(mlp_ratio),
            float(dropout), float(attention_dropout), self.grid_size,
        )  # fmt: skip


# ----------------------------------------------------------------------------- registry entries

_TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "depth": 4, "base_width": 32, "img_size": 128, "transformer_dim": 256, "transformer_layers": 4,
    "transformer_heads": 8, "mlp_ratio": 4.0, "dropout": 0.1,
}  # fmt: skip


@register_model(spatial_dims=2)
def transunet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> TransUNet:
    """TransUNet-style hybrid without SDN: U-Net encoder/decoder (``depth=4``, widths 32..512)
    and a Transformer on the 1/16 map (4 layers, width 256, 8 heads, MLP ratio 4, dropout 0.1,
    position embeddings for 128x128 inputs)."""
    return TransUNet(in_channels, num_classes, **(_TRANSFORMER_DEFAULTS | overrides))


@register_model(spatial_dims=2)
def sdn_transunet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> TransUNet:
    """SDN-Transformer hybrid: :func:`transunet` with SDN blocks (S=150, right then down) in
    the decoder at levels ``1 .. depth-1`` (1/8, 1/4, 1/2 for ``depth=4``): self-attention
    on the coarsest map, spatial recurrence on the finer ones, a plain full-resolution block
    last. Pass ``encoder_sdn`` to add SDN to the high-resolution encoder levels too."""
    kw = _TRANSFORMER_DEFAULTS | {"sdn_block": "sdn", "state_size": 150} | overrides
    if "decoder_sdn" not in overrides:
        kw["decoder_sdn"] = tuple(range(1, check_int("depth", kw["depth"])))
    return TransUNet(in_channels, num_classes, **kw)


__all__ = ["TransUNet", "TransformerBottleneck", "TransformerLayer"]
