"""nnU-Net v2 plans files: :func:`convert_plans` names the SDN networks in chosen configurations,
checks that each builds, and writes the new plans atomically beside the original.
"""

from __future__ import annotations

import copy
import json
import os
import pydoc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from ...io import atomic_write_text
from .networks import BASE_CLASSES, DEFAULT_SDN_OPTIONS, SDN_CLASSES, dotted_name

DEFAULT_PLANS_IDENTIFIER = "nnUNetPlans_SDN"


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
    if class_name in BASE_CLASSES:
        return BASE_CLASSES[class_name]
    for sdn_cls in SDN_CLASSES.values():
        if class_name == dotted_name(sdn_cls):
            return next(b for b, s in SDN_CLASSES.items() if s is sdn_cls)
    known = ", ".join(sorted(BASE_CLASSES))
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
        sdn_cls = SDN_CLASSES[base]
        arch["network_class_name"] = dotted_name(sdn_cls)
        arch["arch_kwargs"] = {k: v for k, v in arch["arch_kwargs"].items() if k not in DEFAULT_SDN_OPTIONS}
        arch["arch_kwargs"].update(json_options)
        _check_builds(sdn_cls, arch, where)
        new["configurations"][name]["architecture"] = arch
    # Written only after every configuration was checked, and atomically: a crash never leaves
    # half a plans file for nnU-Net to read.
    atomic_write_text(target, json.dumps(new, indent=4, sort_keys=False) + "\n", f"the plans {target.name}")
    return target, new


__all__ = ["DEFAULT_PLANS_IDENTIFIER", "PlansError", "convert_plans"]
