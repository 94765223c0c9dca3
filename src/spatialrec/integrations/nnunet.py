"""nnU-Net v2 with spatial recurrence, without forking nnU-Net.

nnU-Net v2 builds its network from the plans file: ``configurations -> <name> -> architecture``
holds ``network_class_name`` (a dotted name that ``get_network_from_plans`` resolves with
``pydoc.locate``), ``arch_kwargs`` (the constructor's keyword arguments) and
``_kw_requires_import`` (the ``arch_kwargs`` that are dotted names of classes). Any importable
class with the right constructor can therefore be trained by the unmodified ``nnUNetv2_train``.

This module provides two such classes, one per nnU-Net network family, 2D and 3D alike (the
dimension comes from ``conv_op``, as in nnU-Net):

- :class:`SDNPlainConvUNet`, nnU-Net's default ``PlainConvUNet``;
- :class:`SDNResidualEncoderUNet`, the ``ResidualEncoderUNet`` of the ResEnc presets.

Each takes the original's constructor arguments plus ``sdn_stages``, ``sdn_state_size``,
``sdn_directions``, ``sdn_gate_init`` and ``sdn_backend``, builds the original network and
replaces one stride-1 convolution per chosen encoder stage by a
:class:`~spatialrec.layers.ResidualSDN` with :func:`~spatialrec.convert.add_spatial_recurrence`:
the last convolution of the stage in a ``PlainConvUNet``, the first convolution of the stage's
last residual block in a ``ResidualEncoderUNet`` (its second convolution feeds a normalisation
that nnU-Net initialises to zero, which would keep the new layer's gradient at zero for a step).

**Initialisation.** ``get_network_from_plans`` calls ``network.apply(network.initialize)`` after
construction; nnU-Net's ``initialize`` draws He-normal weights for every convolution, the
convolutions inside the new layers included. ``Module.apply`` visits children before their
parent, so :meth:`initialize` here, called on a ``ResidualSDN`` after its convolutions were
redrawn, restores the exact start of :mod:`spatialrec.convert`: the SDN branch's output
projection is zeroed, the gate's bias set to ``logit(sdn_gate_init)`` and the conv branch scaled
by ``1 / sigmoid(logit(sdn_gate_init))``. The initialised SDN network therefore computes exactly
what a plain nnU-Net network with the conv branches' weights would compute (bit for bit with the
default ``sdn_gate_init=0.5``): it starts as plain nnU-Net and learns how much recurrence to use.
:func:`load_plain_weights` puts the weights of a (trained) plain network into an SDN network
under the same guarantee.

**The plans command.** :func:`convert_plans` (and ``spatialrec-nnunet`` /
``python -m spatialrec.integrations.nnunet``) reads a plans file, names the SDN class with the
chosen options in the chosen configurations, checks that every converted configuration builds
(on the ``meta`` device: no memory, no time), and writes the result under a new plans
identifier beside the original. ``data_identifier`` is kept, so the preprocessed data is reused.
See ``docs/nnunet.md``.

Needs nnU-Net's networks (``dynamic-network-architectures``); the ``nnunet`` extra installs them
with nnU-Net: ``pip install 'spatialrec[nnunet]'``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pydoc
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union, cast

import torch
from torch import nn

from ..convert import add_spatial_recurrence, exact_start, sdn_modules
from ..layers import ResidualSDN
from ..ops import DirectionLike

try:
    from dynamic_network_architectures.architectures.unet import (
        PlainConvUNet,
        ResidualEncoderUNet,
    )
except ImportError as err:  # pragma: no cover - exercised in the environment without nnU-Net
    raise ImportError(
        "spatialrec.integrations.nnunet needs nnU-Net v2's networks (dynamic-network-architectures), "
        f"which are not importable here ({err}); install them with: pip install 'spatialrec[nnunet]'"
    ) from err

__all__ = [
    "DEFAULT_PLANS_IDENTIFIER",
    "DEFAULT_SDN_OPTIONS",
    "PlansError",
    "SDNPlainConvUNet",
    "SDNResidualEncoderUNet",
    "convert_plans",
    "load_plain_weights",
    "main",
    "sdn_conv_names",
]

DEFAULT_PLANS_IDENTIFIER = "nnUNetPlans_SDN"

DEFAULT_SDN_OPTIONS: dict[str, Any] = {
    "sdn_stages": (-2, -1),
    "sdn_state_size": 16,
    "sdn_directions": None,
    "sdn_gate_init": 0.5,
    "sdn_backend": "auto",
}
"""The SDN options and their defaults: the two deepest encoder stages (the bottleneck and the
stage above it, where nnU-Net's maps are smallest: about 4-8 per axis in its default plans, so a
sweep visits few lines), state size 16, one sweep per axis (``right, down`` in 2D, ``right, down,
in`` in 3D), a bit-exact start. ``docs/nnunet.md`` gives the reasons and the measured cost."""

_BASES: dict[str, type[nn.Module]] = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": PlainConvUNet,
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": ResidualEncoderUNet,
}


def _stage_indices(sdn_stages: object, n_stages: int) -> tuple[int, ...]:
    """``sdn_stages`` (indices into the encoder's stages, negative from the deepest) -> sorted
    non-negative indices."""
    if isinstance(sdn_stages, (str, bytes)) or not isinstance(sdn_stages, Sequence):
        raise TypeError(f"sdn_stages must be a sequence of int stage indices, got {type(sdn_stages).__name__} {sdn_stages!r}")
    if not sdn_stages:
        raise ValueError("sdn_stages must name at least one encoder stage, got an empty sequence")
    out = []
    for s in sdn_stages:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"sdn_stages must hold ints, got {type(s).__name__} {s!r}")
        if not -n_stages <= s < n_stages:
            raise ValueError(
                f"sdn_stages holds {s}, but the network has {n_stages} encoder stages "
                f"(valid indices {-n_stages}..{n_stages - 1}, negative from the deepest)"
            )
        out.append(s % n_stages)
    if len(set(out)) != len(out):
        raise ValueError(f"sdn_stages names a stage twice: {list(sdn_stages)} (stages {out} of {n_stages})")
    return tuple(sorted(out))


def sdn_conv_names(network: nn.Module, stages: Sequence[int]) -> list[str]:
    """Names of the convolutions that get SDN in ``network`` (a ``PlainConvUNet`` or
    ``ResidualEncoderUNet``, plain or SDN) for the given non-negative encoder ``stages``: the last
    convolution of each stage (``PlainConvUNet``), or the first convolution of the stage's last
    residual block (``ResidualEncoderUNet``)."""
    names = []
    for i in stages:
        if isinstance(network, ResidualEncoderUNet):
            block = len(network.encoder.stages[i].blocks) - 1
            names.append(f"encoder.stages.{i}.blocks.{block}.conv1.conv")
        elif isinstance(network, PlainConvUNet):
            last = len(network.encoder.stages[i][0].convs) - 1
            names.append(f"encoder.stages.{i}.0.convs.{last}.conv")
        else:
            raise TypeError(f"network must be an nnU-Net PlainConvUNet or ResidualEncoderUNet, got {type(network).__name__}")
    return names


class _SDNMixin:
    """What both SDN variants add to their nnU-Net base class."""

    sdn_stages: tuple[int, ...]
    sdn_layer_names: list[str]
    sdn_gate_init: float
    _nnunet_base: Any  # the dynamic_network_architectures class this one extends

    def __init__(
        self,
        *args: Any,
        sdn_stages: Sequence[int] = DEFAULT_SDN_OPTIONS["sdn_stages"],
        sdn_state_size: int = DEFAULT_SDN_OPTIONS["sdn_state_size"],
        sdn_directions: Optional[Sequence[DirectionLike]] = DEFAULT_SDN_OPTIONS["sdn_directions"],
        sdn_gate_init: float = DEFAULT_SDN_OPTIONS["sdn_gate_init"],
        sdn_backend: str = DEFAULT_SDN_OPTIONS["sdn_backend"],
        **kwargs: Any,
    ) -> None:
        """The nnU-Net base class's arguments, then the ``sdn_*`` options (see :class:`SDNPlainConvUNet`)."""
        self._nnunet_base.__init__(self, *args, **kwargs)
        assert isinstance(self, nn.Module)
        self.sdn_stages = _stage_indices(sdn_stages, len(cast(Any, self).encoder.stages))
        names = sdn_conv_names(self, self.sdn_stages)
        # JSON gives lists; the layer wants a sequence of names or codes.
        directions = None if sdn_directions is None else tuple(sdn_directions)
        # The chosen convolutions are registered twice (as `.conv` and in `.all_modules`); the
        # conversion replaces both by one layer.
        add_spatial_recurrence(
            self, names, state_size=sdn_state_size, directions=directions, backend=sdn_backend, gate_init=sdn_gate_init
        )
        self.sdn_layer_names = names
        self.sdn_gate_init = float(sdn_gate_init)

    def initialize(self, module: nn.Module) -> None:
        """nnU-Net's initialisation (``network.apply(network.initialize)``), keeping the SDN
        layers' exact start: called on a ``ResidualSDN`` after its convolutions were redrawn."""
        if isinstance(module, ResidualSDN):
            exact_start(module, self.sdn_gate_init)
        else:
            self._nnunet_base.initialize(module)


class SDNPlainConvUNet(_SDNMixin, PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` (2D or 3D, from ``conv_op``) with a residual SDN layer in the
    chosen encoder stages.

    Takes every argument of ``dynamic_network_architectures.architectures.unet.PlainConvUNet``
    plus:

    Args:
        sdn_stages: encoder stages that get SDN (0 = the full-resolution stage; negative indices
            from the deepest, -1 = the bottleneck); in each, the stage's last convolution
            (stride 1) becomes a ``ResidualSDN``. Default ``(-2, -1)``.
        sdn_state_size: ``S`` of each SDN layer; default 16.
        sdn_directions: sweep directions, names or codes; ``None`` (default) sweeps each axis once.
        sdn_gate_init: the conv branch's weight at the start, in (0, 1); 0.5 (default) is bit-exact.
        sdn_backend: scan backend (see :func:`spatialrec.ops.directional_gru_scan`).

    Shapes as the original: ``x: (B, C_in, H, W)`` or ``(B, C_in, D, H, W)`` -> logits
    ``(B, num_classes, ...)``, or a list of them (full resolution first) with deep supervision.

    Example:
        >>> net = SDNPlainConvUNet(1, 3, (4, 8, 16), nn.Conv2d, 3, (1, 2, 2), 2, 2, 2, True,
        ...                        nn.InstanceNorm2d, {"affine": True}, None, None, nn.LeakyReLU,
        ...                        sdn_stages=(-1,), sdn_state_size=4)
        >>> net.sdn_layer_names, net(torch.randn(1, 1, 16, 16)).shape
        (['encoder.stages.2.0.convs.1.conv'], torch.Size([1, 2, 16, 16]))
    """

    _nnunet_base = PlainConvUNet


class SDNResidualEncoderUNet(_SDNMixin, ResidualEncoderUNet):
    """nnU-Net's ``ResidualEncoderUNet`` (the ResEnc presets; 2D or 3D) with a residual SDN layer
    in the chosen encoder stages.

    Takes every argument of ``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet``
    plus the ``sdn_*`` options of :class:`SDNPlainConvUNet`. In each chosen stage the first
    convolution of the last residual block (stride 1 when the stage has two or more blocks, as in
    every stage of nnU-Net's ResEnc presets below the first) becomes a ``ResidualSDN``.
    """

    _nnunet_base = ResidualEncoderUNet


_SDN_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    PlainConvUNet: SDNPlainConvUNet,
    ResidualEncoderUNet: SDNResidualEncoderUNet,
}


_MODULE = "spatialrec.integrations.nnunet"


def _dotted(cls: type) -> str:
    # Not cls.__module__: under `python -m` that is "__main__", which nnU-Net could not import.
    return f"{_MODULE}.{cls.__qualname__}"


def load_plain_weights(network: nn.Module, plain_state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the ``state_dict`` of a plain nnU-Net network (``PlainConvUNet`` /
    ``ResidualEncoderUNet``, e.g. ``checkpoint["network_weights"]`` of a trained nnU-Net) into the
    SDN variant built with the same arguments, so that it computes what the plain network
    computes (bit for bit with ``sdn_gate_init=0.5``): each SDN layer's conv branch gets the
    replaced convolution's weights and its SDN branch is reset to the exact start. Then fine-tune.

    Raises:
        TypeError: ``network`` is not an SDN nnU-Net network.
        RuntimeError: the keys or shapes do not match (as ``load_state_dict(strict=True)``).
    """
    if not isinstance(network, _SDNMixin):
        raise TypeError(f"network must be an SDNPlainConvUNet or SDNResidualEncoderUNet, got {type(network).__name__}")
    # Every name a ResidualSDN is registered under (nnU-Net registers each conv twice, and the
    # decoder holds the encoder), each mapped to where the plain network kept the replaced conv.
    aliases = [name for name, m in network.named_modules(remove_duplicate=False) if isinstance(m, ResidualSDN)]
    state = dict(network.state_dict())
    used: set[str] = set()
    for key in state:
        prefix = next((n for n in aliases if key.startswith(n + ".")), None)
        if prefix is None:
            plain_key = key
        elif key.startswith(prefix + ".conv."):
            plain_key = prefix + key[len(prefix) + len(".conv") :]
        else:
            continue  # the SDN branch: reset below
        if plain_key not in plain_state_dict:
            raise RuntimeError(f"plain state_dict has no {plain_key!r}; was it saved from the plain twin of this network?")
        state[key] = plain_state_dict[plain_key]
        used.add(plain_key)
    unexpected = sorted(set(plain_state_dict) - used)
    if unexpected:
        raise RuntimeError(f"plain state_dict has keys the network does not: {unexpected[:5]}")
    network.load_state_dict(state, strict=True)
    for layer in sdn_modules(network).values():
        assert isinstance(layer, ResidualSDN)
        exact_start(layer, network.sdn_gate_init)


# ----------------------------------------------------------------------------- plans files


class PlansError(ValueError):
    """A plans file or an option that :func:`convert_plans` cannot use."""


def _load_plans(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PlansError(f"plans file {str(path)!r} does not exist" if not path.exists() else f"{str(path)!r} is not a file")
    try:
        plans = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlansError(
            f"plans file {str(path)!r} is not JSON ({err}); nnU-Net v2 writes its plans as JSON "
            "(nnU-Net v1's .pkl plans are not supported: plan the data set with nnunetv2)"
        ) from None
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise PlansError(
            f"plans file {str(path)!r} is not an nnU-Net v2 plans file: no 'configurations' mapping "
            f"(top-level keys: {sorted(plans)[:10] if isinstance(plans, dict) else type(plans).__name__})"
        )
    for key in ("dataset_name", "plans_name"):
        if not isinstance(plans.get(key), str):
            raise PlansError(f"plans file {str(path)!r} is not an nnU-Net v2 plans file: no {key!r}")
    return plans


def _architecture(plans: Mapping[str, Any], name: str, path: Path) -> Optional[dict[str, Any]]:
    """The configuration's own ``architecture`` (None when it inherits one), checked."""
    config = plans["configurations"][name]
    if not isinstance(config, dict):
        raise PlansError(f"{str(path)!r}: configuration {name!r} is not a mapping")
    arch = config.get("architecture")
    if arch is None:
        if "inherits_from" in config:
            return None
        old = [k for k in ("UNet_class_name", "UNet_base_num_features", "conv_kernel_sizes") if k in config]
        raise PlansError(
            f"{str(path)!r}: configuration {name!r} has no 'architecture' entry"
            + (f" (it has {old}: plans of an older nnU-Net v2)" if old else "")
            + "; re-plan the data set with a current nnunetv2 (nnUNetv2_plan_experiment)"
        )
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("network_class_name"), str)
        and isinstance(arch.get("arch_kwargs"), dict)
        and isinstance(arch.get("_kw_requires_import"), list)
    ):
        raise PlansError(
            f"{str(path)!r}: configuration {name!r}: 'architecture' must hold 'network_class_name' (str), "
            "'arch_kwargs' (mapping) and '_kw_requires_import' (list)"
        )
    return arch


def _resolved_architecture(plans: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    seen = []
    while True:
        arch = _architecture(plans, name, path)
        if arch is not None:
            return arch
        seen.append(name)
        parent = plans["configurations"][name]["inherits_from"]
        if parent not in plans["configurations"] or parent in seen:
            raise PlansError(f"{str(path)!r}: configuration {name!r} inherits from {parent!r}, which cannot be resolved")
        name = parent


def _base_class(class_name: str, where: str) -> type[nn.Module]:
    if class_name in _BASES:
        return _BASES[class_name]
    for sdn_cls in _SDN_CLASSES.values():
        if class_name == _dotted(sdn_cls):
            return next(b for b, s in _SDN_CLASSES.items() if s is sdn_cls)
    known = ", ".join(sorted(_BASES))
    raise PlansError(f"{where}: network_class_name {class_name!r} has no SDN variant; supported: {known}")


def _check_builds(cls: type[nn.Module], arch: Mapping[str, Any], where: str) -> None:
    """Build the network as nnU-Net would, on the meta device (no memory, no time)."""
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise PlansError(f"{where}: arch_kwargs[{key!r}] = {kwargs[key]!r} cannot be imported")
            kwargs[key] = located
    try:
        with torch.device("meta"):
            cls(input_channels=1, num_classes=2, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise PlansError(f"{where}: {cls.__name__} cannot be built with these arguments: {err}") from None


def convert_plans(
    plans_file: Union[str, os.PathLike],
    configurations: Optional[Sequence[str]] = None,
    *,
    plans_identifier: str = DEFAULT_PLANS_IDENTIFIER,
    overwrite: bool = False,
    **sdn_options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Write an nnU-Net v2 plans file whose configurations use the SDN networks.

    Args:
        plans_file: an nnU-Net v2 plans file, e.g.
            ``$nnUNet_preprocessed/Dataset001_X/nnUNetPlans.json``.
        configurations: names of the configurations to convert (e.g. ``["2d", "3d_fullres"]``);
            ``None`` converts every configuration that defines its own architecture (those that
            inherit one, such as ``3d_cascade_fullres``, follow their parent).
        plans_identifier: the new plans' name; the file is ``<plans_identifier>.json`` beside
            ``plans_file`` and is trained with ``nnUNetv2_train ... -p <plans_identifier>``.
        overwrite: replace an existing file of that name.
        **sdn_options: ``sdn_stages``, ``sdn_state_size``, ``sdn_directions``, ``sdn_gate_init``,
            ``sdn_backend`` (see :class:`SDNPlainConvUNet`); those not given take the defaults
            of :data:`DEFAULT_SDN_OPTIONS`.

    Returns:
        ``(path written, new plans)``.

    Raises:
        PlansError: no such file, not an nnU-Net v2 plans file (or one from an older v2, without
            ``architecture`` entries), an unknown configuration, a network without an SDN
            variant, an unknown option or one the network cannot take (a stage it does not
            have, a 3D direction in a 2D configuration, ...), an existing target without
            ``overwrite``. Nothing is written then.
    """
    path = Path(plans_file)
    unknown = sorted(set(sdn_options) - set(DEFAULT_SDN_OPTIONS))
    if unknown:
        raise PlansError(f"unknown SDN option(s) {unknown}; the networks take {sorted(DEFAULT_SDN_OPTIONS)}")
    if not plans_identifier or not all(c.isalnum() or c in "_-." for c in plans_identifier):
        raise PlansError(f"plans_identifier must be a non-empty name of letters, digits, '_', '-' or '.', got {plans_identifier!r}")
    plans = _load_plans(path)
    if plans_identifier == plans["plans_name"] or path.stem == plans_identifier:
        raise PlansError(f"plans_identifier {plans_identifier!r} is the input's own; choose a new one")
    target = path.with_name(f"{plans_identifier}.json")
    if target.exists() and not overwrite:
        raise PlansError(f"{str(target)!r} exists; pass overwrite=True (--overwrite) to replace it")

    available = list(plans["configurations"])
    if configurations is None:
        chosen = [c for c in available if _architecture(plans, c, path) is not None]
        if not chosen:
            raise PlansError(f"{str(path)!r}: no configuration defines an architecture")
    else:
        chosen = list(configurations)
        missing = [c for c in chosen if c not in plans["configurations"]]
        if missing or not chosen:
            raise PlansError(f"unknown configuration(s) {missing or chosen}; {str(path)!r} has {available}")

    options = {**DEFAULT_SDN_OPTIONS, **sdn_options}
    json_options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    new = copy.deepcopy(plans)
    new["plans_name"] = plans_identifier
    for name in chosen:
        where = f"{str(path)!r}: configuration {name!r}"
        arch = copy.deepcopy(_resolved_architecture(plans, name, path))
        base = _base_class(arch["network_class_name"], where)
        sdn_cls = _SDN_CLASSES[base]
        arch["network_class_name"] = _dotted(sdn_cls)
        arch["arch_kwargs"] = {k: v for k, v in arch["arch_kwargs"].items() if k not in DEFAULT_SDN_OPTIONS}
        arch["arch_kwargs"].update(json_options)
        _check_builds(sdn_cls, arch, where)
        new["configurations"][name]["architecture"] = arch
    # Writes only after every configuration was checked; a temporary file keeps a crash from
    # leaving half a plans file.
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(new, indent=4, sort_keys=False) + "\n")
    tmp.replace(target)
    return target, new


# ----------------------------------------------------------------------------- command line


def _direction(text: str) -> Union[str, int]:
    return int(text) if text.lstrip("-").isdigit() else text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spatialrec-nnunet",
        description=(
            "Write an nnU-Net v2 plans file whose configurations use spatialrec's SDN networks "
            "(SDNPlainConvUNet / SDNResidualEncoderUNet), and print the nnUNetv2_train command."
        ),
    )
    p.add_argument("plans_file", help="an nnU-Net v2 plans file, e.g. $nnUNet_preprocessed/Dataset001_X/nnUNetPlans.json")
    p.add_argument("-c", "--configurations", nargs="+", default=None, metavar="CONF",
                   help="configurations to convert (default: every one that defines an architecture)")
    p.add_argument("-o", "--plans-identifier", default=DEFAULT_PLANS_IDENTIFIER,
                   help=f"name of the new plans (default {DEFAULT_PLANS_IDENTIFIER}); written as <name>.json beside the input")
    p.add_argument("--stages", type=int, nargs="+", default=list(DEFAULT_SDN_OPTIONS["sdn_stages"]), metavar="I",
                   help="encoder stages that get SDN, negative from the deepest (default: -2 -1)")
    p.add_argument("--state-size", type=int, default=DEFAULT_SDN_OPTIONS["sdn_state_size"],
                   help="SDN state size S (default 16)")
    p.add_argument("--directions", nargs="+", type=_direction, default=None, metavar="DIR",
                   help="sweep directions, names or codes (default: each axis once: right down [in])")
    p.add_argument("--gate-init", type=float, default=DEFAULT_SDN_OPTIONS["sdn_gate_init"],
                   help="initial weight of the conv branch, in (0, 1); 0.5 (default) gives a bit-exact start")
    p.add_argument("--backend", default=DEFAULT_SDN_OPTIONS["sdn_backend"], help="scan backend (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plans file of that name")
    return p  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``spatialrec-nnunet``: convert a plans file; returns the exit status (2: bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        target, plans = convert_plans(
            args.plans_file,
            args.configurations,
            plans_identifier=args.plans_identifier,
            overwrite=args.overwrite,
            sdn_stages=tuple(args.stages),
            sdn_state_size=args.state_size,
            sdn_directions=None if args.directions is None else tuple(args.directions),
            sdn_gate_init=args.gate_init,
            sdn_backend=args.backend,
        )
    except PlansError as err:
        parser.print_usage(sys.stderr)
        print(f"spatialrec-nnunet: error: {err}", file=sys.stderr)
        return 2
    converted = [c for c, cfg in plans["configurations"].items()
                 if cfg.get("architecture", {}).get("network_class_name", "").startswith(_MODULE + ".")]  # fmt: skip
    print(f"wrote {target}")
    for conf in converted:
        print(f"nnUNetv2_train {plans['dataset_name']} {conf} FOLD -p {args.plans_identifier}")
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so the classes named in the plans are the ones nnU-Net
    # will import (not copies living in __main__).
    from spatialrec.integrations.nnunet import main as _main

    sys.exit(_main())
