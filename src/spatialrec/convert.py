"""Putting spatial recurrence into existing networks, 2D or 3D.

:func:`add_spatial_recurrence` replaces chosen convolutions (``nn.Conv2d``,
``nn.ConvTranspose2d``, ``nn.Conv3d``, ``nn.ConvTranspose3d``) of any ``nn.Module`` (a MONAI,
nnU-Net or segmentation_models_pytorch U-Net, a home-made network) by a residual SDN layer of the
same dimensionality and geometry (a :class:`~spatialrec.layers.ResidualSDN` with
``spatial_dims`` 2 or 3), which computes exactly what the replaced convolution computed until
training moves it. :func:`sdn_modules` lists the spatial-recurrence layers of a model and
:func:`freeze_except_sdn` freezes everything else for a first fine-tuning phase. Nothing here
depends on the number of spatial dimensions: it is read from the convolution's kernel size.

Exact start (see ``docs/interop.md``). A residual SDN layer computes
``y = sigmoid(g) * conv(x) + (1 - sigmoid(g)) * s`` with ``(s, g) = sdn(x).chunk(2)``. The
conversion

- zeroes the weights and biases of the rows of ``sdn.project_out`` that produce ``s``, so ``s = 0``;
- zeroes the weights of the rows that produce ``g`` and sets their bias to
  ``b = logit(gate_init)``, so ``g = b`` everywhere;
- copies the original weights and bias into ``conv``, multiplied by ``1 / sigmoid(b)``.

Then ``y = sigmoid(b) * conv(x) / sigmoid(b) = conv(x)``. With the default ``gate_init = 0.5``,
``b = 0``, ``sigmoid(b)`` is exactly 0.5 and the scale exactly 2, so every product is exact in
binary floating point and the converted layer reproduces the original bit for bit (in 3D as in
2D: the argument never looks at the shape). Gradients at the start reach ``conv`` and every row
of ``sdn.project_out`` (``dy/ds = 1 - sigmoid(b)``, ``dy/dg = sigmoid'(b) * conv(x)``);
``sdn.project_in`` and the sweeps receive exactly zero gradient until the first optimiser step
has made ``project_out`` non-zero, as with any zero-initialised output projection. After one
step every parameter receives gradient.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .checks import check_float, check_int
from .layers import DirectionalGRU, ResidualSDN, SpatialDependencyLayer
from .layers.nd import CONV_TYPES, ConvNd
from .ops import DirectionLike
from .torch_private import has_module_hooks

__all__ = ["add_spatial_recurrence", "exact_start", "freeze_except_sdn", "sdn_modules"]

logger = logging.getLogger(__name__)

Selector = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]
"""What :func:`add_spatial_recurrence` accepts as ``select``."""

Conv = ConvNd
"""The convolutions :func:`add_spatial_recurrence` converts."""

_CONV_NAMES = "/".join(t.__name__ for t in CONV_TYPES)

# The spatial-recurrence layer types (2D and 3D alike: the dimension is an argument).
_SDN_TYPES = (ResidualSDN, SpatialDependencyLayer, DirectionalGRU)


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _sdn_owned_names(model: nn.Module) -> dict[str, str]:
    """Names of the modules strictly inside a spatial-recurrence layer -> that layer's name."""
    owned: dict[str, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _SDN_TYPES) and name not in owned:
            for sub_name, _ in module.named_modules(remove_duplicate=False):
                if sub_name:
                    owned.setdefault(f"{name}.{sub_name}" if name else sub_name, name)
    return owned


def _check_convertible(name: str, conv: Conv) -> None:
    """Refuse, naming the module, anything whose behaviour the conversion could not reproduce."""
    kind = type(conv).__name__
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"module {name!r} has uninitialised (lazy) weights; run one forward pass before converting")
    if nn.utils.parametrize.is_parametrized(conv):
        raise ValueError(
            f"module {name!r} is parametrized (e.g. weight or spectral norm); its weight is recomputed at "
            "every call and cannot be copied faithfully, remove the parametrization first"
        )
    if type(conv) not in CONV_TYPES:
        base = next(t for t in type(conv).__mro__ if t in CONV_TYPES)
        raise TypeError(
            f"module {name!r} is a {type(conv).__module__}.{type(conv).__qualname__}, a subclass of "
            f"{base.__name__} with its own behaviour; only plain torch.nn.{', '.join(t.__name__ for t in CONV_TYPES)} "
            "can be converted (leave it out of `select`)"
        )
    if has_module_hooks(conv):
        raise ValueError(
            f"module {name!r} has forward or backward hooks (e.g. old-style weight_norm); they would be "
            "lost by the replacement, remove them before converting"
        )
    if not conv.weight.is_floating_point():
        raise TypeError(f"module {name!r} has weights of dtype {conv.weight.dtype}; a floating-point dtype is expected")
    if conv.transposed and conv.padding_mode != "zeros":
        raise ValueError(
            f"module {name!r}: {kind} with padding_mode={conv.padding_mode!r} is not supported (only 'zeros')"
        )


def _select(model: nn.Module, select: Selector) -> dict[str, Conv]:
    """Resolve ``select`` to ``{name: conv}`` in ``named_modules`` order, each conv once (first name)."""
    owned = _sdn_owned_names(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    candidates: dict[str, Conv] = {
        name: m for name, m in modules.items() if name and isinstance(m, CONV_TYPES) and name not in owned
    }
    hint = f"; convertible convolutions include {list(candidates)[:8]}" if candidates else ""

    chosen: list[str] = []
    if isinstance(select, str):
        if not select:
            raise ValueError("select must not be an empty pattern")
        chosen = [name for name in candidates if fnmatch.fnmatchcase(name, select)]
        what = f"pattern {select!r}"
    elif callable(select):
        for name, conv in candidates.items():
            verdict = select(name, conv)
            if not isinstance(verdict, bool):
                raise TypeError(f"select predicate must return a bool, returned {type(verdict).__name__} for {name!r}")
            if verdict:
                chosen.append(name)
        what = f"predicate {getattr(select, '__name__', repr(select))}"
    elif isinstance(select, (list, tuple, set, frozenset)):
        for name in select:
            if not isinstance(name, str):
                raise TypeError(f"select names must be str, got {type(name).__name__} {name!r}")
            if name in owned:
                raise ValueError(
                    f"module {name!r} is inside the spatial-recurrence layer {owned[name]!r} (added by an earlier "
                    "conversion or part of the model); converting it again is refused"
                )
            if not name or name not in modules:
                raise ValueError(f"select names {name!r}, which is not a sub-module of the model{hint}")
            module = modules[name]
            if isinstance(module, _SDN_TYPES):
                raise ValueError(f"module {name!r} is already a spatial-recurrence layer ({type(module).__name__})")
            if name not in candidates:
                raise TypeError(
                    f"module {name!r} is a {type(module).__name__}; select must name torch.nn.Conv2d, "
                    "ConvTranspose2d, Conv3d or ConvTranspose3d modules"
                )
            chosen.append(name)
        what = f"names {sorted(select)}"
    else:
        raise TypeError(
            "select must be a glob pattern (str), a list of module names, or a predicate "
            f"(name, module) -> bool, got {type(select).__name__}"
        )

    chosen_names = set(chosen)
    selected: dict[str, Conv] = {}
    for name, conv in candidates.items():  # named_modules order
        if name in chosen_names and all(conv is not other for other in selected.values()):
            selected[name] = conv
    if not selected:
        if isinstance(model, CONV_TYPES):
            hint = "; the model itself is a convolution, wrap it in a container (e.g. nn.Sequential) to convert it"
        elif not candidates:
            hint = f"; the model has no {_CONV_NAMES} left outside spatial-recurrence layers"
        raise ValueError(f"select ({what}) matches no convolution of the model{hint}")
    return selected


def _geometry_conv(conv: Conv, out_channels: int, *, copy_config: bool) -> Conv:
    """A fresh conv of ``conv``'s type and geometry with ``out_channels`` outputs.

    ``copy_config`` keeps groups, bias and padding mode too (the conv branch, which must reproduce
    the original); without it the conv is dense, biased and zero-padded (the SDN's project-in).
    """
    make: Callable[..., Conv] = type(conv)
    transposed_only = {"output_padding": conv.output_padding} if conv.transposed else {}
    return make(
        conv.in_channels,
        out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups if copy_config else 1,
        bias=(conv.bias is not None) if copy_config else True,
        padding_mode=conv.padding_mode if copy_config else "zeros",
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        **transposed_only,
    )


def _build_replacement(
    name: str,
    conv: Conv,
    state_size: int,
    directions: Optional[Sequence[DirectionLike]],
    backend: str,
    gate_init: float,
) -> ResidualSDN:
    """A residual SDN layer of ``conv``'s dimensionality computing exactly ``conv`` at
    initialisation (module docstring)."""
    spatial_dims = len(conv.kernel_size)
    try:
        # The layer's constructor knows kernel/stride/padding only; dilation and the conv branch's
        # groups, bias and padding mode are installed below.
        block = ResidualSDN(
            conv.in_channels,
            conv.out_channels,
            state_size=state_size,
            directions=directions,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            transposed=conv.transposed,
            output_padding=conv.output_padding if conv.transposed else 0,
            backend=backend,
            spatial_dims=spatial_dims,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    except (TypeError, ValueError) as err:
        # Say which module: in a mixed 2D/3D model a direction such as "in" is valid for some only.
        error = TypeError if isinstance(err, TypeError) else ValueError
        raise error(f"module {name!r} ({type(conv).__name__}): {err}") from err
    if any(d != 1 for d in conv.dilation):
        # Same output size as the original: project-in takes the original's full geometry.
        block.sdn.project_in = _geometry_conv(conv, state_size, copy_config=False)
    branch = _geometry_conv(conv, conv.out_channels, copy_config=True)
    with torch.no_grad():
        # Same class as the original, so the same parameters in the same order: weight (, bias).
        for new, old in zip(branch.parameters(), conv.parameters()):
            new.copy_(old)
            new.requires_grad_(old.requires_grad)
    block.conv = branch
    exact_start(block, gate_init)
    block.train(conv.training)
    return block


def exact_start(layer: ResidualSDN, gate_init: float = 0.5) -> None:
    """Make ``layer`` compute exactly what its conv branch ``layer.conv`` computes now.

    Zeroes the rows of ``layer.sdn.project_out`` (so ``s = 0``), sets the gate's bias to
    ``logit(gate_init)`` and scales the conv branch by ``1 / sigmoid(b)`` (module docstring:
    bit-exact for ``gate_init=0.5``). :func:`add_spatial_recurrence` calls it after copying the
    original convolution into the branch; frameworks that re-initialise every convolution after
    building a network (nnU-Net) call it again afterwards.
    """
    bias_value = math.log(gate_init) - math.log1p(-gate_init)
    with torch.no_grad():
        proj = layer.sdn.project_out
        assert proj.bias is not None  # a 1x1 conv built with a bias
        proj.weight.zero_()
        proj.bias.zero_()
        proj.bias[layer.out_channels :] = bias_value
        # The factor that forward() will multiply by, computed as forward computes it.
        gate = torch.sigmoid(torch.tensor(bias_value, dtype=proj.weight.dtype, device=proj.weight.device))
        for p in layer.conv.parameters():
            p.mul_(1.0 / gate)


def add_spatial_recurrence(
    model: nn.Module,
    select: Selector,
    *,
    state_size: int = 150,
    directions: Optional[Sequence[DirectionLike]] = None,
    backend: str = "auto",
    gate_init: float = 0.5,
) -> list[str]:
    """Replace chosen convolutions of ``model``, in place, by equivalent residual SDN layers.

    Every selected ``nn.Conv2d`` (``x: (B, C_in, H, W) -> (B, C_out, H', W')``) or
    ``nn.ConvTranspose2d`` becomes a :class:`ResidualSDN` (``spatial_dims=2``); every selected
    ``nn.Conv3d`` (``x: (B, C_in, D, H, W) -> (B, C_out, D', H', W')``) or ``nn.ConvTranspose3d``
    one with ``spatial_dims=3``. A model may mix both: each convolution gets the layer of its own
    dimensionality. The new layer has the same in/out channels, kernel size, stride, padding,
    dilation, groups (conv branch), bias presence, padding mode (conv branch), output padding,
    device and dtype, so the output shape is unchanged. The original weights go into its conv
    branch and its gate starts so that the converted model computes what the original computed
    (exactly for ``gate_init=0.5``, to float rounding otherwise) until training moves it. The new
    module keeps the original's train/eval mode.

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
            drop-in on a small network, 8-32 on volumes).
        directions: sweep directions of each new SDN layer, in composition order: names or codes
            0 ``right``, 1 ``left`` (along W), 2 ``down``, 3 ``up`` (along H), and in 3D also
            4 ``in``, 5 ``out`` (along D). ``None`` (default) sweeps each axis once:
            ``("right", "down")`` for a 2D convolution, ``("right", "down", "in")`` for a 3D one.
        backend: scan backend, see :func:`spatialrec.ops.directional_gru_scan`.
        gate_init: ``sigmoid(g)`` at the start, the weight of the conv branch, in ``(0, 1)``.
            ``0.5`` (default) makes the start bit-exact; values nearer 1 keep the pretrained
            branch's gradients nearer their original size, values nearer 0 let the new SDN
            branch learn faster.

    Returns:
        The names of the replaced convolutions, in ``named_modules`` order.

    Raises:
        ValueError: ``select`` matches nothing, names a missing module or a convolution inside
            a spatial-recurrence layer, or a selected conv is lazy, parametrized or hooked, or
            transposed with a padding mode other than zeros; a direction not valid for a selected
            convolution's dimensionality (``"in"`` for a ``Conv2d``); ``gate_init`` not in
            ``(0, 1)``; ``state_size < 1``.
        TypeError: bad ``select``/``model``/``state_size``/``gate_init`` type, a selected module
            that is not a plain ``Conv2d``/``ConvTranspose2d``/``Conv3d``/``ConvTranspose3d``
            (subclasses such as timm's ``Conv2dSame`` have their own forward and are refused), or
            one with non-floating-point weights.

    Nothing is modified when an error is raised.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
        >>> add_spatial_recurrence(net, ["0"], state_size=8)
        ['0']
        >>> type(net[0]).__name__
        'ResidualSDN'
        >>> vol = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
        >>> add_spatial_recurrence(vol, "*", state_size=4)
        ['0', '2']
        >>> vol[0].directions, vol(torch.randn(1, 1, 4, 6, 8)).shape
        (('right', 'down', 'in'), torch.Size([1, 2, 4, 6, 8]))
    """
    _check_model(model)
    state_size = check_int("state_size", state_size)  # NumPy integers too (e.g. from a sweep's np.arange)
    gate_init = check_float("gate_init", gate_init, 0.0, 1.0, low_open=True, high_open=True)

    selected = _select(model, select)
    for name, conv in selected.items():
        _check_convertible(name, conv)

    # Build every replacement before touching the model, so a failure leaves it unchanged.
    replacements = {
        id(conv): _build_replacement(name, conv, state_size, directions, backend, gate_init)
        for name, conv in selected.items()
    }
    # Every path to a chosen conv, not named_children() (which yields a module once per parent):
    # a conv registered twice, in one parent or in several, is replaced under each name.
    targets = [(name, m) for name, m in model.named_modules(remove_duplicate=False) if name and id(m) in replacements]
    for path, conv in targets:
        parent_name, _, child_name = path.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, replacements[id(conv)])
    for name, conv in selected.items():
        logger.info("replaced %s (%s) by %s", name, conv, replacements[id(conv)])
    return list(selected)


def sdn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The spatial-recurrence layers of ``model``: ``{name: layer}`` in ``named_modules`` order.

    Lists every outermost :class:`ResidualSDN`, :class:`SpatialDependencyLayer` or
    :class:`DirectionalGRU`, 2D or 3D; layers nested inside another are not listed again. For a model converted by
    :func:`add_spatial_recurrence` from a network that had none, these are exactly the added
    layers, under the names of the convolutions they replaced.
    """
    _check_model(model)
    owned = _sdn_owned_names(model)
    return {name: m for name, m in model.named_modules() if isinstance(m, _SDN_TYPES) and name not in owned}


def freeze_except_sdn(model: nn.Module, *, conv_branch: bool = True) -> list[str]:
    """Freeze every parameter of ``model`` except those of its spatial-recurrence layers (2D or 3D).

    For a first fine-tuning phase after :func:`add_spatial_recurrence`: only the new layers learn
    while the pretrained rest stays fixed. Sets ``requires_grad``; undo with
    ``model.requires_grad_(True)``. It does not touch train/eval mode: BatchNorm layers in train
    mode still update their running statistics, call ``.eval()`` on them to keep them fixed too.

    Args:
        model: the model, modified in place.
        conv_branch: also train the conv branch (``.conv``, the copied pretrained weights) of each
            residual SDN layer; ``False`` freezes it so only the SDN branch and gate learn.

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
        frozen: set[int] = set()
        if not conv_branch and isinstance(layer, ResidualSDN):
            frozen = {id(p) for p in layer.conv.parameters()}
        trainable.update(id(p) for p in layer.parameters() if id(p) not in frozen)
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return [name for name, p in model.named_parameters() if p.requires_grad]
