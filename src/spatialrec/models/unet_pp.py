"""UNet++ (nested U-Net) with optional SDN blocks per node (the paper's SDN-UNet++).

Node ``X[i, j]`` is at level ``i`` (resolution ``1 / 2**i``); ``j = 0`` is the encoder column,
``j >= 1`` the nested decoders. ``X[i, j] = block(cat(X[i, 0], ..., X[i, j-1], up(X[i+1, j-1])))``
with ``up`` a linear x2 (bilinear; trilinear for volumes, ``spatial_dims=3``). The output is read
from ``X[0, depth]`` (or from every ``X[0, j]`` with deep supervision).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union, cast

import torch
from torch import nn

from ..blocks import make_block, set_sdn_cell
from ..checks import check_bool, check_int
from ..layers import PUBLISHED_CELL
from ..layers.nd import conv_cls
from ..ops import DirectionLike, interpolate2x
from .common import (
    MAX_POOL,
    LevelsLike,
    UNetFamily,
    check_model_input,
    crop_window,
    pad_to_multiple,
    parse_items,
)
from .registry import register_model

NodesLike = Union[str, Iterable[Union[int, tuple[int, int]]]]


def _parse_nodes(name: str, nodes: NodesLike, depth: int) -> frozenset[tuple[int, int]]:
    valid = {(i, j) for i in range(depth) for j in range(1, depth - i + 1)}
    out: set[tuple[int, int]] = set()
    for item in parse_items(name, nodes, "levels/(i, j) nodes", valid):
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < depth:
                raise ValueError(f"{name} contains level {item}; decoder levels are 0..{depth - 1}")
            out |= {(item, j) for j in range(1, depth - item + 1)}
        elif (
            isinstance(item, tuple) and len(item) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            if item not in valid:
                raise ValueError(
                    f"{name} contains node {item}; decoder nodes (i, j) need 0 <= i < depth={depth} and 1 <= j <= depth - i"
                )
            out.add(item)
        else:
            raise TypeError(f"{name} must contain levels (int) or nodes (i, j), got {item!r}")
    return frozenset(out)


class UNetPlusPlus(UNetFamily):
    """UNet++ (nested U-Net, Zhou et al. 2018) with SDN blocks at the nodes you choose.

    Widths ``base_width * 2**i`` per level (the published model: 32, 64, 128, 256, 512),
    VGG blocks, 2x max-pool down, linear x2 (``align_corners=True``) up, dense skip
    connections. Inputs of any size with every side ``>= 2**depth`` are padded to a multiple of
    ``2**depth`` (``pad_mode``) and the logits cropped back.

    Args:
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        depth: number of down-samplings (1 to as many as you like; the published model: 1-4).
        base_width: channels at level 0, doubled per level.
        deep_supervision: if True, ``forward`` returns a list of ``depth`` logit maps, one per
            nested decoder ``X[0, 1] .. X[0, depth]`` (the last is the full model's output).
        encoder_sdn: encoder levels ``0 .. depth`` (nodes ``X[i, 0]``) that use SDN blocks, or
            ``"all"``/``"none"``.
        decoder_sdn: decoder nodes that use SDN blocks: ``(i, j)`` pairs (``j >= 1``), levels
            ``i`` (every decoder node of that level), ``"all"`` or ``"none"``.
        sdn_block: ``"residual_sdn"`` (default, as the published UNet++) or ``"sdn"``.
        state_size, directions, backend: of every SDN layer (paper: 150, right then down; the
            defaults in 3D: 32, right, down, in).
        pad_mode: ``"reflect"`` (default), ``"replicate"`` or ``"constant"`` (zeros).
        spatial_dims: 2 (default) or 3 (volumes: 3D convolutions, pools, trilinear up-sampling).
        norm: ``"batch"`` or ``"instance"``; default batch in 2D, instance in 3D.

    Shape:
        ``(B, in_channels, *spatial) -> (B, num_classes, *spatial)`` logits (a list of those
        with ``deep_supervision``).

    Example:
        >>> model = UNetPlusPlus(3, 1, depth=4, encoder_sdn=(0, 1, 2, 3))  # SDN-UNet++
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_width: int = 32,
        *,
        deep_supervision: bool = False,
        encoder_sdn: LevelsLike = (),
        decoder_sdn: NodesLike = (),
        sdn_block: str = "residual_sdn",
        state_size: Optional[int] = None,
        directions: Optional[Sequence[DirectionLike]] = None,
        backend: str = "auto",
        pad_mode: str = "reflect",
        spatial_dims: int = 2,
        norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        sdn = self._set_options(
            in_channels, num_classes, depth, base_width, encoder_sdn=encoder_sdn, sdn_block=sdn_block,
            state_size=state_size, directions=directions, backend=backend, pad_mode=pad_mode,
            spatial_dims=spatial_dims, norm=norm,
        )  # fmt: skip
        self.deep_supervision = check_bool("deep_supervision", deep_supervision)
        self.decoder_sdn = _parse_nodes("decoder_sdn", decoder_sdn, depth)
        w = self.widths

        def block(is_sdn: bool, c_in: int, c_out: int) -> nn.Module:
            return make_block(sdn_block if is_sdn else "vgg", c_in, c_out, **sdn)

        # Keys follow the published names conv{i}_{j}, so published checkpoints line up by name.
        self.nodes = nn.ModuleDict()
        for i in range(depth + 1):
            self.nodes[f"conv{i}_0"] = block(i in self.encoder_sdn, in_channels if i == 0 else w[i - 1], w[i])
        for i in range(depth):
            for j in range(1, depth - i + 1):
                self.nodes[f"conv{i}_{j}"] = block((i, j) in self.decoder_sdn, j * w[i] + w[i + 1], w[i])
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(conv_cls(spatial_dims)(w[0], num_classes, kernel_size=1) for _ in range(n_heads))

    def sdn_nodes(self) -> dict[str, tuple]:
        """Where the SDN blocks are: ``{"encoder": (levels...), "decoder": ((i, j), ...)}``, sorted."""
        return {"encoder": tuple(sorted(self.encoder_sdn)), "decoder": tuple(sorted(self.decoder_sdn))}

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        """``x: (B, in_channels, *spatial)``, sides ``>= 2**depth`` -> logits ``(B, num_classes, *spatial)``,
        or a list of ``depth`` such maps with ``deep_supervision``."""
        check_model_input(x, self.in_channels, self.spatial_dims, self.depth, type(self).__name__, cast(nn.Conv2d, self.heads[0]).weight.dtype)
        pool = MAX_POOL[self.spatial_dims]
        x, window = pad_to_multiple(x, self.min_size, self.pad_mode)
        nodes = self.nodes
        cols: list[list[torch.Tensor]] = [[nodes["conv0_0"](x)]]  # cols[i] = [X[i, 0], X[i, 1], ...]
        for i in range(1, self.depth + 1):
            cols.append([nodes[f"conv{i}_0"](pool(cols[i - 1][0], 2))])
            # The new deepest node completes one anti-diagonal of decoder nodes, from deep to shallow.
            for j in range(1, i + 1):
                r = i - j
                up = interpolate2x(cols[r + 1][j - 1])  # bilinear/trilinear x2, align_corners=True
                cols[r].append(nodes[f"conv{r}_{j}"](torch.cat([*cols[r][:j], up], dim=1)))
        if self.deep_supervision:
            return [crop_window(head(cols[0][j + 1]), window) for j, head in enumerate(self.heads)]
        return crop_window(self.heads[0](cols[0][self.depth]), window)

    @classmethod
    def from_published_args(
        cls,
        n_channels: int = 3,
        n_classes: int = 1,
        n_layers: int = 4,
        sdn_b_enc: bool = False,
        sdn_b_dec: bool = False,
        sdn_n_layers: int = 3,
        **kwargs: object,
    ) -> "UNetPlusPlus":
        """Build the nested U-Net the published training script builds from its flags.

        The published model fixes the widths (32 .. 512), bilinear up-sampling and residual SDN
        blocks, and ignores ``--feat_start``, ``--bilinear`` and ``--block``.
        See :func:`published_unet_pp_nodes` for its placement rule. ``kwargs`` go to
        :class:`UNetPlusPlus` (``state_size``, ``directions``, ``backend``, ``pad_mode``,
        ``deep_supervision``).

        Raises:
            ValueError: ``n_layers`` outside 1..4 (the published model has five levels at most).
        """
        enc, dec = published_unet_pp_nodes(n_layers, sdn_b_enc, sdn_b_dec, sdn_n_layers)
        kwargs.setdefault("base_width", 32)
        model = cls(n_channels, n_classes, depth=n_layers, encoder_sdn=enc, decoder_sdn=dec, **kwargs)  # type: ignore[arg-type]
        set_sdn_cell(model, **PUBLISHED_CELL)  # the published layer, exactly
        return model


def published_unet_pp_nodes(
    n_layers: int, sdn_b_enc: bool, sdn_b_dec: bool, sdn_n_layers: int
) -> tuple[frozenset[int], frozenset[tuple[int, int]]]:
    """The published nested U-Net's SDN placement: ``(encoder levels, decoder nodes)``.

    Encoder (``--sdn_b_enc``): ``X[0,0]`` and ``X[1,0]`` always, ``X[k,0]`` for ``k >= 2`` when
    ``sdn_n_layers >= k``. Decoder (``--sdn_b_dec``): ``X[0,1]`` always, ``X[0,2]`` when
    ``sdn_n_layers >= 2``, ``X[0,3]`` when ``>= 3``, and when ``>= 4`` the whole last diagonal
    ``X[3,1], X[2,2], X[1,3], X[0,4]``. Only nodes that exist at depth ``n_layers`` count.

    Raises:
        ValueError: ``n_layers`` is not in 1..4.
    """
    check_int("n_layers", n_layers)
    if n_layers > 4:
        raise ValueError(f"n_layers={n_layers}: the published nested U-Net has 1 to 4 down-samplings")
    check_bool("sdn_b_enc", sdn_b_enc)
    check_bool("sdn_b_dec", sdn_b_dec)
    check_int("sdn_n_layers", sdn_n_layers, minimum=None)
    enc = {k for k in range(n_layers + 1) if k <= 1 or sdn_n_layers >= k} if sdn_b_enc else set()
    dec: set[tuple[int, int]] = set()
    if sdn_b_dec:
        dec = {(0, j) for j in (1, 2, 3) if j == 1 or sdn_n_layers >= j}
        if sdn_n_layers >= 4:
            dec |= {(3, 1), (2, 2), (1, 3), (0, 4)}
    # Node X[i, j] exists when i + j <= n_layers.
    return frozenset(enc), frozenset((i, j) for i, j in dec if i + j <= n_layers)


# ----------------------------------------------------------------------------- registry entries


@register_model(spatial_dims=2)
def unet_pp(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNetPlusPlus:
    """Plain UNet++: ``depth=4``, widths 32..512, bilinear up-sampling, no deep supervision."""
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "deep_supervision": False}
    return UNetPlusPlus(in_channels, num_classes, **(kw | overrides))


@register_model(spatial_dims=2)
def sdn_unet_pp(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNetPlusPlus:
    """SDN-UNet++: UNet++ with residual SDN blocks (S=150, right then down) in the encoder.

    The published nested U-Net with ``--n_layers 4 --sdn_b_enc True --sdn_b_dec False`` and
    the default ``--sdn_n_layers 3``: residual SDN blocks at encoder nodes ``X[0,0] .. X[3,0]``,
    VGG blocks elsewhere. Overriding ``depth`` keeps levels ``0 .. min(depth, 3)`` unless
    ``encoder_sdn`` is given.
    """
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "sdn_block": "residual_sdn", "state_size": 150}
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        kw["encoder_sdn"] = tuple(range(min(check_int("depth", kw["depth"]), 3) + 1))
    return UNetPlusPlus(in_channels, num_classes, **kw)


__all__ = ["UNetPlusPlus", "published_unet_pp_nodes"]
