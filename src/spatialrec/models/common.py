"""What every model of :mod:`spatialrec.models` shares: argument parsing, input checks, padding.

Written once for maps and volumes: a model's ``spatial_dims`` (2 or 3) selects the layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import SDN_BLOCK_KINDS, count_sdn_layers, resolve_norm
from ..checks import check_choice, check_input, check_int, check_spatial_dims
from ..layers import DEFAULT_STATE_SIZE
from ..ops import DEFAULT_DIRECTIONS, DirectionLike, normalize_directions, resolve_backend
from ..ops.library import tracing

PAD_MODES: tuple[str, ...] = ("reflect", "replicate", "constant")
"""How models pad inputs up to a multiple of ``2**depth`` (``"constant"`` pads with zeros)."""

MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
"""The 2x max-pool of the encoders, by number of spatial dimensions."""

LevelsLike = Union[str, Iterable[int]]

Window = tuple[tuple[int, int], ...]
"""``((start, size), ...)`` per spatial axis: where the original input sits in a padded one."""


def block_options(
    state_size: Optional[int],
    directions: Optional[Sequence[DirectionLike]],
    backend: str,
    spatial_dims: int,
    norm: Optional[str],
) -> dict[str, Any]:
    """Check the block arguments every model takes, at construction, and fill in the defaults of
    ``spatial_dims`` (``S`` 150 in 2D, 32 in 3D; right, down (, in); batch norm in 2D, instance in
    3D). Returns them as keyword arguments of :func:`~spatialrec.blocks.make_block`."""
    check_spatial_dims(spatial_dims)
    s = check_int("state_size", DEFAULT_STATE_SIZE[spatial_dims] if state_size is None else state_size)
    dirs = normalize_directions(DEFAULT_DIRECTIONS[spatial_dims] if directions is None else directions, spatial_dims)
    resolve_backend(backend)
    norm = resolve_norm(norm, spatial_dims)
    return {"state_size": s, "directions": dirs, "backend": backend, "spatial_dims": spatial_dims, "norm": norm}


class UNetFamily(nn.Module):
    """What :class:`~spatialrec.models.UNet` and :class:`~spatialrec.models.UNetPlusPlus` share: the
    constructor arguments both take, checked and stored by :meth:`_set_options`, and what follows
    from them (:attr:`min_size`, :meth:`num_sdn_layers`). It holds no parameters: a subclass's
    ``state_dict`` keys are its own.

    Attributes (after :meth:`_set_options`):
        spatial_dims, in_channels, num_classes, depth, base_width, sdn_block, pad_mode: as given.
        state_size, directions, norm: as given, or the defaults of ``spatial_dims``.
        encoder_sdn: the encoder levels (``0..depth``) with SDN blocks.
        widths: channels per level, ``base_width * 2**level`` for levels ``0..depth``.
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    depth: int
    base_width: int
    sdn_block: str
    state_size: int
    directions: tuple[str, ...]
    norm: str
    pad_mode: str
    encoder_sdn: frozenset[int]
    widths: tuple[int, ...]

    def _set_options(
        self,
        in_channels: int,
        num_classes: int,
        depth: int,
        base_width: int,
        *,
        encoder_sdn: LevelsLike,
        sdn_block: str,
        state_size: Optional[int],
        directions: Optional[Sequence[DirectionLike]],
        backend: str,
        pad_mode: str,
        spatial_dims: int,
        norm: Optional[str],
    ) -> dict[str, Any]:
        """Check the shared arguments (``TypeError``/``ValueError`` naming the first bad one) and
        store them; return the SDN block options (keyword arguments of :func:`~spatialrec.blocks.make_block`)."""
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.num_classes = check_int("num_classes", num_classes)
        self.depth = check_int("depth", depth)
        self.base_width = check_int("base_width", base_width)
        self.sdn_block = check_choice("sdn_block", sdn_block, SDN_BLOCK_KINDS)
        sdn = block_options(state_size, directions, backend, spatial_dims, norm)
        self.state_size, self.directions, self.norm = sdn["state_size"], sdn["directions"], sdn["norm"]
        self.pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
        self.encoder_sdn = parse_levels("encoder_sdn", encoder_sdn, range(self.depth + 1))
        self.widths = tuple(self.base_width * 2**lv for lv in range(self.depth + 1))
        return sdn

    @property
    def min_size(self) -> int:
        """The smallest input side accepted: ``2**depth``."""
        return 2**self.depth

    def num_sdn_layers(self) -> int:
        """Number of SDN layers in the model (one per SDN block)."""
        return count_sdn_layers(self)


def parse_items(name: str, value: Union[str, Iterable[Any]], what: str, every: Iterable[Any]) -> list[Any]:
    """The items of ``value``: ``every`` item for ``"all"``, none for ``"none"``, else those of the iterable."""
    if isinstance(value, str):
        if value in ("all", "none"):
            return list(every) if value == "all" else []
        raise ValueError(f"{name}={value!r} is not valid; expected 'all', 'none' or an iterable of {what}")
    if isinstance(value, (bool, int)):
        raise TypeError(f"{name} must be 'all', 'none' or an iterable of {what}, got {value!r}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be 'all', 'none' or an iterable of {what}, got {type(value).__name__}") from None


def parse_levels(name: str, levels: LevelsLike, valid: Sequence[int]) -> frozenset[int]:
    """Turn ``"all"``, ``"none"`` or an iterable of level indices into a set, checking the range.

    Raises:
        TypeError: ``levels`` is not a string or an iterable of ints.
        ValueError: a level is outside ``valid``.
    """
    items = parse_items(name, levels, "levels (e.g. (1, 2))", valid)
    for lv in items:
        if isinstance(lv, bool) or not isinstance(lv, int):
            raise TypeError(f"{name} must contain ints, got {lv!r}")
        if lv not in valid:
            raise ValueError(f"{name} contains level {lv}; valid levels are {min(valid)}..{max(valid)}")
    return frozenset(items)


def check_model_input(
    x: object, in_channels: int, spatial_dims: int, depth: int, model: str, dtype: Optional[torch.dtype] = None
) -> torch.Tensor:
    """Check a model input ``x: (B, in_channels, *spatial)`` whose every side is ``>= 2**depth``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor (of the model's dtype outside autocast).
        ValueError: wrong number of dims or channels, or a side smaller than ``2**depth``.
    """
    if torch.jit.is_tracing():
        # A trace records the padding to a multiple of 2**depth for the example's size only: at
        # another size the traced model would return an output of the example's size, silently.
        raise RuntimeError(
            f"{model} cannot be traced by torch.jit.trace (nor exported with torch.onnx.export("
            "dynamo=False)): its padding depends on the input size. Use torch.export.export with "
            "dynamic_shapes, or spatialrec.export.to_onnx"
        )
    x = check_input(x, in_channels, spatial_dims, what=f"{model} input", dtype=dtype)
    sizes = tuple(x.shape[2:])
    if torch.compiler.is_exporting():
        # torch's own operators decide on a map one pixel wide (max-pool's contiguity check, the
        # instance norm's "more than one element"), so an exported program is guarded against a
        # deepest map of one pixel, i.e. a side of 2**depth. Declare that bound on each symbolic
        # side (it becomes the program's range) instead of leaving a guard the declared range
        # does not show (torch.export's Dim.AUTO otherwise declared sides >= 2 for some models).
        for axis, side in enumerate(sizes):
            if isinstance(side, torch.SymInt):
                torch._check(
                    side > 2**depth,
                    lambda axis=axis: f"an exported {model} serves sides > 2**depth = {2**depth}, and input axis "
                    f"{axis + 2} of the example is not: export from an example whose every side is "
                    f"> {2**depth}",
                )
    if min(sizes) < 2**depth:
        axes = "(D, H, W)" if spatial_dims == 3 else "(H, W)"
        raise ValueError(
            f"{model} input of spatial size {axes}={sizes} is too small for depth={depth}: each side "
            f"must be >= 2**depth = {2**depth} so that the deepest map is at least one pixel"
        )
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> tuple[torch.Tensor, Window]:
    """Pad the spatial axes of ``x: (B, C, *spatial)`` up to multiples of ``multiple``.

    The padding is split between both sides of each axis (the odd pixel at the far side), so the
    image stays centred. Reflection needs each pad to be smaller than the side, which holds
    whenever every side is ``>= multiple``.

    Returns:
        The padded tensor and the window ``((start, size), ...)`` of the original in it.
    """
    sizes = x.shape[2:]
    # The padded side written as ``multiple * ceil(s / multiple)`` (not ``s + (-s) % multiple``,
    # the same number): under torch.compile/export with symbolic sizes, the halvings of the
    # encoder then simplify exactly and no floor expressions reach the decoder's padding.
    # (ceil written with a non-negative numerator: exported integer division truncates.)
    pads = [multiple * ((s + multiple - 1) // multiple) - s for s in sizes]
    starts = [p // 2 for p in pads]
    window = tuple((st, s) for st, s in zip(starts, sizes))
    if tracing():
        # Pad unconditionally (no guard "no padding needed" tying the program to multiples),
        # and reflect/replicate by gathering indices: the ONNX exporter's reflection pad is
        # wrong for unequal symbolic pads on the two sides.
        return (_pad_by_gather(x, pads, starts, mode) if mode != "constant" else _pad(x, pads, starts, mode)), window
    if any(pads):
        x = _pad(x, pads, starts, mode)
    return x, window


def _pad(x: torch.Tensor, pads: list[int], starts: list[int], mode: str) -> torch.Tensor:
    flat: list[int] = []
    for p, st in zip(reversed(pads), reversed(starts)):  # F.pad lists the last axis first
        flat += [st, p - st]
    return F.pad(x, flat, mode=mode)


def _pad_by_gather(x: torch.Tensor, pads: list[int], starts: list[int], mode: str) -> torch.Tensor:
    """``F.pad(x, ..., mode)`` for ``mode`` "reflect" or "replicate", as one gather per axis."""
    first = x.dim() - len(pads)
    for axis, (p, st) in enumerate(zip(pads, starts)):
        n = x.shape[first + axis]
        idx = torch.arange(n + p, device=x.device) - st
        if mode == "reflect":
            idx = (n - 1) - ((n - 1) - idx.abs()).abs()
        else:
            idx = idx.clamp(0, n - 1)
        x = x.index_select(first + axis, idx)
    return x


def crop_window(x: torch.Tensor, window: Window) -> torch.Tensor:
    """Cut ``window`` (from :func:`pad_to_multiple`) out of ``x: (B, C, *padded)``."""
    if not tracing():
        index: tuple[Any, ...] = (..., *(slice(st, st + s) for st, s in window))
        return x[index]
    # Traced: gather the window's indices instead of slicing. A traced slice asks whether it
    # covers the whole axis and keeps the answer as a shape guard, which would tie a compiled or
    # exported program to the example's size (multiples of 2**depth or not).
    first = x.dim() - len(window)
    for axis, (st, s) in enumerate(window):
        x = x.index_select(first + axis, torch.arange(s, device=x.device) + st)
    return x


__all__ = [
    "MAX_POOL",
    "PAD_MODES",
    "LevelsLike",
    "UNetFamily",
    "Window",
    "block_options",
    "check_model_input",
    "crop_window",
    "pad_to_multiple",
    "parse_items",
    "parse_levels",
]
