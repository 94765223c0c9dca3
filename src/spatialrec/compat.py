"""Loading weights saved by the published SDN implementation.

The published code names the SDN layer's parts ``pre_cnn`` (project-in convolution),
``sdn_update_network.<k>.cell`` (the k-th directional GRU, in the given direction order) and
``post_cnn`` (1x1 project-out); its residual variant nests those under ``sdn.`` and adds the
convolution branch ``cnn``. spatialrec calls them ``project_in``, ``sweeps.<k>``,
``project_out`` and ``conv``. The tensors themselves need no change: the published GRU cell
uses the same gate order (r, z, n) and neighbour order (j-1, j, j+1) as docs/maths.md.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch

_SDN_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^pre_cnn\.(weight|bias)$"), r"project_in.\1"),
    (re.compile(r"^sdn_update_network\.(\d+)\.cell\.(weight_ih|weight_hh|bias_ih|bias_hh)$"), r"sweeps.\1.\2"),
    (re.compile(r"^post_cnn\.(weight|bias)$"), r"project_out.\1"),
)
_RESIDUAL_CONV = re.compile(r"^cnn\.(weight|bias)$")


def _convert_sdn_key(key: str) -> str | None:
    for pattern, repl in _SDN_PATTERNS:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def _check_complete(new: Mapping[str, torch.Tensor], prefix: str, residual: bool) -> None:
    expected = {f"{prefix}{part}.{p}" for part in ("project_in", "project_out") for p in ("weight", "bias")}
    if residual:
        expected |= {"conv.weight", "conv.bias"}
    sweep_key = re.compile(rf"^{re.escape(prefix)}sweeps\.(\d+)\.")
    sweeps = sorted({int(m.group(1)) for m in map(sweep_key.match, new) if m})
    if not sweeps:
        expected.add(f"{prefix}sweeps.0.weight_ih")  # at least one direction is required
    if sweeps != list(range(len(sweeps))):
        raise KeyError(f"published state_dict has non-consecutive directions: sdn_update_network indices {sweeps}")
    for k in sweeps:
        expected |= {f"{prefix}sweeps.{k}.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    missing = sorted(expected - set(new))
    if missing:
        raise KeyError(f"published state_dict is missing keys (spatialrec names): {missing}")


def convert_published_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a published SDN (or residual SDN) state_dict to spatialrec's keys.

    Args:
        state_dict: keys as saved by the published ``SDNLayer`` (``pre_cnn.*``,
            ``sdn_update_network.<k>.cell.*``, ``post_cnn.*``) or ``ResSDNLayer`` (the same under
            ``sdn.``, plus ``cnn.*``).

    Returns:
        A new dict for :class:`~spatialrec.SpatialDependencyLayer` or
        :class:`~spatialrec.ResidualSDN` ``.load_state_dict``; tensors are shared, not copied.
        Build the layer with the published cell (``**PUBLISHED_CELL``: ``carry="prior",
        composition="serial"``); a layer of another cell switches to it on loading, with a
        warning (the dict's metadata marks it as saved by the published code).

    Raises:
        TypeError: ``state_dict`` is not a mapping.
        KeyError: some keys are unknown (listed) or required keys are missing (listed).

    Example:
        >>> # skip: needs sdn.pt, a layer's state_dict saved by the published code
        >>> from spatialrec.layers import PUBLISHED_CELL
        >>> layer = SpatialDependencyLayer(32, 32, state_size=150, directions=(0, 2), **PUBLISHED_CELL)
        >>> layer.load_state_dict(convert_published_state_dict(torch.load("sdn.pt")))
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    residual = any(k.startswith("sdn.") or _RESIDUAL_CONV.match(k) for k in state_dict)
    prefix = "sdn." if residual else ""
    new: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if residual and _RESIDUAL_CONV.match(key):
            new[_RESIDUAL_CONV.sub(r"conv.\1", key)] = value
            continue
        inner = key[len(prefix):] if key.startswith(prefix) else None
        converted = _convert_sdn_key(inner) if inner is not None else None
        if converted is None:
            unknown.append(key)
        else:
            new[prefix + converted] = value
    if unknown:
        raise KeyError(
            f"published state_dict has keys that no SDN or residual-SDN layer holds: {sorted(unknown)}; "
            "pass the state_dict of one layer (strip any enclosing model's prefix first)"
        )
    _check_complete(new, prefix, residual)
    # Mark every SDN module as saved before the cell options (version 1): loaded into a layer of
    # the default cell, it switches to the published cell (with a warning) instead of silently
    # computing something the weights were never trained for.
    out: OrderedDict[str, torch.Tensor] = OrderedDict(new)
    sweeps = {k[len(prefix) :].split(".")[1] for k in new if k.startswith(prefix + "sweeps.")}
    metadata = {prefix.rstrip("."): {"version": 1}} | {f"{prefix}sweeps.{i}": {"version": 1} for i in sweeps}
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


__all__ = ["convert_published_state_dict"]
