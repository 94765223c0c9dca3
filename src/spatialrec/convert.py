"""Putting spatial recurrence into existing networks.

:func:`add_spatial_recurrence` replaces chosen ``nn.Conv2d`` / ``nn.ConvTranspose2d`` modules of
any ``nn.Module`` (a MONAI or segmentation_models_pytorch U-Net, a home-made network) by a
:class:`~spatialrec.layers.ResidualSDN` of the same geometry, which computes exactly what the
replaced convolution computed until training moves it. :func:`sdn_modules` lists the
spatial-recurrence layers of a model and :func:`freeze_except_sdn` freezes everything else for a
first fine-tuning phase.

Exact start (see ``docs/interop.md``). ``ResidualSDN`` computes
``y = sigmoid(g) * conv(x) + (1 - sigmoid(g)) * s`` with ``(s, g) = sdn(x).chunk(2)``. The
conversion

- zeroes the weights and biases of the rows of ``sdn.project_out`` that produce ``s``, so ``s = 0``;
- zeroes the weights of the rows that produce ``g`` and sets their bias to
  ``b = logit(gate_init)``, so ``g = b`` everywhere;
- copies the original weights and bias into ``conv``, multiplied by ``1 / sigmoid(b)``.

Then ``y = sigmoid(b) * conv(x) / sigmoid(b) = conv(x)``. With the default ``gate_init = 0.5``,
``b = 0``, ``sigmoid(b)`` is exactly 0.5 and the scale exactly 2, so every product is exact in
binary floating point and the converted layer reproduces the original bit for bit. Gradients at
the start reach ``conv`` and every row of ``sdn.project_out`` (``dy/ds = 1 - sigmoid(b)``,
``dy/dg = sigmoid'(b) * conv(x)``); ``sdn.project_in`` and the sweeps receive exactly zero
gradient until the first optimiser step has made ``project_out`` non-zero, as with any
zero-initialised output projection. After one step every parameter receives gradient.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from typing import Callable, Iterable, Sequence, Union

import torch
from torch import nn

from .layers import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from .ops import DirectionLike

__all__ = ["add_spatial_recurrence", "freeze_except_sdn", "sdn_modules"]

logger = logging.getLogger(__name__)

Selector = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]
"""What :func:`add_spatial_recurrence` accepts as ``select``."""

_SDN_TYPES = (ResidualSDN, SpatialDependencyLayer, DirectionalGRU2d)
_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def _sdn_owned_names(model: nn.Module) -> dict[str, str]:
    """Names of the modules strictly inside a spatial-recurrence layer -> that layer's name."""
    owned: dict[str, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _SDN_TYPES) and name not in owned:
            for sub_name, _ in module.named_modules(remove_duplicate=False):
                if sub_name:
                    owned.setdefault(f"{name}.{sub_name}" if name else sub_name, name)
    return owned


def _describe_conv(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _check_convertible(name: str, conv: nn.Module) -> None:
    """Refuse, naming the module, anything whose behaviour the conversion could not reproduce."""
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"module {name!r} has uninitialised (lazy) weights; run one forward pass before converting")
    if nn.utils.parametrize.is_parametrized(conv):
        raise ValueError(
            f"module {name!r} is parametrized (e.g. weight or spectral norm); its weight is recomputed at "
            "every call and cannot be copied faithfully, remove the parametrization first"
        )
    if type(conv) not in _CONV_TYPES:
        raise TypeError(
            f"module {name!r} is a {_describe_conv(conv)}, a subclass of "
            f"{'ConvTranspose2d' if isinstance(conv, nn.ConvTranspose2d) else 'Conv2d'} with its own "
            "behaviour; only plain torch.nn.Conv2d and torch.nn.ConvTranspose2d can be converted "
            "(leave it out of `select`)"
        )
    if conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks:
        raise ValueError(
            f"module {name!r} has forward or backward hooks (e.g. old-style weight_norm); they would be "
            "lost by the replacement, remove them before converting"
        )
    if not conv.weight.is_floating_point():
        raise TypeError(f"module {name!r} has weights of dtype {conv.weight.dtype}; a floating-point dtype is expected")
    if isinstance(conv, nn.ConvTranspose2d) and conv.padding_mode != "zeros":
        raise ValueError(f"module {name!r}: ConvTranspose2d with padding_mode={conv.padding_mode!r} is not supported")


def _select(model: nn.Module, select: Selector) -> dict[int, str]:
    """Resolve ``select`` to ``{id(conv): first name}`` in ``named_modules`` order."""
    owned = _sdn_owned_names(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    candidates = {
        name: m for name, m in modules.items() if name and isinstance(m, _CONV_TYPES) and name not in owned
    }

    if isinstance(select, str):
        if not select:
            raise ValueError("select must not be an empty pattern")
        chosen = [name for name in candidates if fnmatch.fnmatchcase(name, select)]
        what = f"pattern {select!r}"
    elif callable(select):
        chosen = []
        for name, m in candidates.items():
            verdict = select(name, m)
            if not isinstance(verdict, bool):
                raise TypeError(
                    f"select predicate must return a bool, returned {type(verdict).__name__} for {name!r}"
                )
            if verdict:
                chosen.append(name)
        what = f"predicate {getattr(select, '__name__', repr(select))}"
    elif isinstance(select, (list, tuple, set, frozenset)):
        chosen = []
        for name in select:
            if not isinstance(name, str):
                raise TypeError(f"select names must be str, got {type(name).__name__} {name!r}")
            if name in owned:
                raise ValueError(
                    f"module {name!r} is inside the spatial-recurrence layer {owned[name]!r} (added by an earlier "
                    "conversion or part of the model); converting it again is refused"
                )
            if name not in modules or not name:
                conv_names = list(candidates)
                hint = f"; convertible convolutions include {conv_names[:8]}" if conv_names else ""
                raise ValueError(f"select names {name!r}, which is not a sub-module of the model{hint}")
            m = modules[name]
            if isinstance(m, _SDN_TYPES):
                raise ValueError(f"module {name!r} is already a spatial-recurrence layer ({type(m).__name__})")
            if not isinstance(m, _CONV_TYPES):
                raise TypeError(
                    f"module {name!r} is a {type(m).__name__}; select must name torch.nn.Conv2d or "
                    "torch.nn.ConvTranspose2d modules"
                )
            chosen.append(name)
        what = f"names {sorted(select)}"
    else:
        raise TypeError(
            "select must be a glob pattern (str), a list of module names, or a predicate "
            f"(name, module) -> bool, got {type(select).__name__}"
        )

    order = {name: i for i, name in enumerate(modules)}
    by_id: dict[int, str] = {}
    for name in sorted(chosen, key=order.__getitem__):
        by_id.setdefault(id(modules[name]), name)
    if not by_id:
        extra = ""
        if isinstance(model, _CONV_TYPES):
            extra = "; the model itself is a convolution, wrap it in a container (e.g. nn.Sequential) to convert it"
        elif not candidates:
            extra = "; the model has no Conv2d/ConvTranspose2d left outside spatial-recurrence layers"
        else:
            extra = f"; convertible convolutions include {list(candidates)[:8]}"
        raise ValueError(f"select ({what}) matches no convolution of the model{extra}")
    return by_id


def _geometry_conv(conv: nn.Module, out_channels: int, *, copy_config: bool) -> nn.Module:
    """A fresh conv of ``conv``'s type and geometry with ``out_channels`` outputs.

    ``copy_config`` keeps groups, bias and padding mode too (the conv branch, which must reproduce
    the original); without it the conv is dense, biased and zero-padded (the SDN's project-in).
    """
    kw = dict(
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups if copy_config else 1,
        bias=(conv.bias is not None) if copy_config else True,
        padding_mode=conv.padding_mode if copy_config else "zeros",
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    if isinstance(conv, nn.ConvTranspose2d):
        return nn.ConvTranspose2d(conv.in_channels, out_channels, output_padding=conv.output_padding, **kw)
    return nn.Conv2d(conv.in_channels, out_channels, **kw)


def _build_replacement(
    conv: nn.Module,
    state_size: int,
    directions: Sequence[DirectionLike],
    backend: str,
    gate_init: float,
) -> ResidualSDN:
    """A ``ResidualSDN`` computing exactly ``conv`` at initialisation (module docstring)."""
    transposed = isinstance(conv, nn.ConvTranspose2d)
    # ResidualSDN's constructor only knows kernel/stride/padding; padding strings ("same") are
    # valid for Conv2d only, and dilation is installed below, so build it with the plain geometry.
    block = ResidualSDN(
        conv.in_channels,
        conv.out_channels,
        state_size=state_size,
        directions=directions,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        transposed=transposed,
        output_padding=conv.output_padding if transposed else 0,
        backend=backend,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    if conv.dilation != (1, 1):
        # Same output size as the original: project-in takes the original's full geometry.
        block.sdn.project_in = _geometry_conv(conv, state_size, copy_config=False)
    block.conv = _geometry_conv(conv, conv.out_channels, copy_config=True)

    out = conv.out_channels
    dtype = conv.weight.dtype
    bias_value = math.log(gate_init) - math.log1p(-gate_init)
    with torch.no_grad():
        proj = block.sdn.project_out
        proj.weight.zero_()
        proj.bias.zero_()
        proj.bias[out:] = bias_value
        # The factor that forward() will multiply by, computed as forward computes it.
        gate = torch.sigmoid(torch.tensor(bias_value, dtype=dtype, device=conv.weight.device))
        scale = 1.0 / gate
        block.conv.weight.copy_(conv.weight * scale)
        if conv.bias is not None:
            block.conv.bias.copy_(conv.bias * scale)
    block.conv.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        block.conv.bias.requires_grad_(conv.bias.requires_grad)
    block.train(conv.training)
    return block


def add_spatial_recurrence(
    model: nn.Module,
    select: Selector,
    *,
    state_size: int = 150,
    directions: Sequence[DirectionLike] = ("right", "down"),
    backend: str = "auto",
    gate_init: float = 0.5,
) -> list[str]:
    """Replace chosen convolutions of ``model``, in place, by equivalent :class:`ResidualSDN` layers.

    Every selected ``nn.Conv2d`` (``x: (B, C_in, H, W) -> (B, C_out, H', W')``) or
    ``nn.ConvTranspose2d`` becomes a ``ResidualSDN`` with the same in/out channels, kernel size,
    stride, padding, dilation, groups (conv branch), bias presence, padding mode (conv branch),
    output padding, device and dtype, so the output shape is unchanged. The original weights go
    into its conv branch and its gate starts so that the converted model computes what the
    original computed (exactly for ``gate_init=0.5``, to float rounding otherwise) until training
    moves it. The new module keeps the original's train/eval mode.

    Args:
        model: any ``nn.Module``; modified in place.
        select: which convolutions to convert:

            - a ``str``: a glob pattern (``fnmatch``, case-sensitive) on the dotted module names
              of ``model.named_modules()``; ``*`` also matches dots, so ``"encoder.*"`` matches
              every convolution under ``encoder``. Only convolutions are considered;
            - a list/tuple/set of exact module names, each of which must name a convolution;
            - a predicate ``(name, module) -> bool``, called for every convolution.

            Convolutions inside a spatial-recurrence layer (added earlier, or part of the model)
            are never candidates, so converting twice cannot nest layers: a pattern then only
            finds convolutions still unconverted, and naming an inner convolution is refused.
            A convolution registered under several names (shared weights) is replaced
            everywhere by one layer.
        state_size: ``S`` of each new SDN layer (the paper uses 150; 8-64 is plenty for a
            drop-in on a small network).
        directions: sweep directions of each new SDN layer, in composition order.
        backend: scan backend, see :func:`spatialrec.ops.directional_gru_scan`.
        gate_init: ``sigmoid(g)`` at the start, the weight of the conv branch, in ``(0, 1)``.
            ``0.5`` (default) makes the start bit-exact; values nearer 1 keep the pretrained
            branch's gradients nearer their original size, values nearer 0 let the new SDN
            branch learn faster.

    Returns:
        The names of the replaced convolutions, in ``named_modules`` order.

    Raises:
        ValueError: ``select`` matches nothing, names a missing module or a convolution inside
            a spatial-recurrence layer, or a selected conv is lazy, parametrized or hooked;
            bad ``gate_init`` or ``state_size``.
        TypeError: bad ``select``/``model`` type, a selected module that is not a plain
            ``Conv2d``/``ConvTranspose2d`` (subclasses such as timm's ``Conv2dSame`` have their
            own forward and are refused).

    Nothing is modified when an error is raised.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
        >>> add_spatial_recurrence(net, ["0"], state_size=8)
        ['0']
        >>> type(net[0]).__name__
        'ResidualSDN'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(gate_init, bool) or not isinstance(gate_init, (int, float)) or not 0.0 < gate_init < 1.0:
        raise ValueError(f"gate_init must be a float strictly between 0 and 1, got {gate_init!r}")
    if isinstance(state_size, bool) or not isinstance(state_size, int) or state_size < 1:
        raise ValueError(f"state_size must be a positive int, got {state_size!r}")

    by_id = _select(model, select)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name in by_id.values():
        _check_convertible(name, modules[name])

    # Build every replacement before touching the model, so a failure leaves it unchanged.
    replacements = {
        key: _build_replacement(modules[name], state_size, directions, backend, float(gate_init))
        for key, name in by_id.items()
    }
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                setattr(parent, child_name, replacements[id(child)])
    for key, name in by_id.items():
        logger.info("replaced %s (%s) by %s", name, modules[name], replacements[key])
    return list(by_id.values())


def sdn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The spatial-recurrence layers of ``model``: ``{name: layer}`` in ``named_modules`` order.

    Lists every outermost :class:`ResidualSDN`, :class:`SpatialDependencyLayer` or
    :class:`DirectionalGRU2d` (layers nested inside another are not listed again). For a model
    converted by :func:`add_spatial_recurrence` from a network that had none, these are exactly
    the added layers, under the names of the convolutions they replaced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    owned = _sdn_owned_names(model)
    return {
        name: m for name, m in model.named_modules() if isinstance(m, _SDN_TYPES) and name not in owned
    }


def freeze_except_sdn(model: nn.Module, *, conv_branch: bool = True) -> list[str]:
    """Freeze every parameter of ``model`` except those of its spatial-recurrence layers.

    For a first fine-tuning phase after :func:`add_spatial_recurrence`: only the new layers learn
    while the pretrained rest stays fixed. Sets ``requires_grad``; undo with
    ``model.requires_grad_(True)``. It does not touch train/eval mode: BatchNorm layers in train
    mode still update their running statistics, call ``.eval()`` on them to keep them fixed too.

    Args:
        model: the model, modified in place.
        conv_branch: also train the conv branch (``.conv``, the copied pretrained weights) of each
            ``ResidualSDN``; ``False`` freezes it so only the SDN branch and gate learn.

    Returns:
        The names of the parameters left trainable.

    Raises:
        ValueError: ``model`` has no spatial-recurrence layer (freezing would freeze everything).
    """
    layers = sdn_modules(model)
    if not layers:
        raise ValueError("model has no spatial-recurrence layer; run add_spatial_recurrence first")
    trainable: set[int] = set()
    for layer in layers.values():
        frozen_branch: Iterable[nn.Parameter] = ()
        if not conv_branch and isinstance(layer, ResidualSDN):
            frozen_branch = layer.conv.parameters()
        frozen_ids = {id(p) for p in frozen_branch}
        trainable.update(id(p) for p in layer.parameters() if id(p) not in frozen_ids)
    names = []
    for name, p in model.named_parameters():
        keep = id(p) in trainable
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    return names
