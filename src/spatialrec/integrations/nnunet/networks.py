"""nnU-Net v2's two network families with residual SDN layers in chosen encoder stages:
:class:`SDNPlainConvUNet` and :class:`SDNResidualEncoderUNet` (2D or 3D from ``conv_op``), their
SDN options and defaults, and :func:`load_plain_weights` (a plain network's weights into its SDN
twin, keeping the exact start). The package docstring (:mod:`spatialrec.integrations.nnunet`)
explains the choice of convolutions and the initialisation.

Needs nnU-Net's networks (``dynamic-network-architectures``): ``pip install 'spatialrec[nnunet]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, cast

import torch
from torch import nn

from ...convert import add_spatial_recurrence, exact_start, sdn_modules
from ...layers import ResidualSDN
from ...ops import DirectionLike

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

PACKAGE = "spatialrec.integrations.nnunet"
"""Where plans files find the SDN classes (re-exported there): the name nnU-Net imports."""

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

BASE_CLASSES: dict[str, type[nn.Module]] = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": PlainConvUNet,
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": ResidualEncoderUNet,
}
"""The nnU-Net networks that have an SDN variant, by the dotted name plans files give them."""


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


SDN_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    PlainConvUNet: SDNPlainConvUNet,
    ResidualEncoderUNet: SDNResidualEncoderUNet,
}
"""Each nnU-Net base class and its SDN variant."""


def dotted_name(cls: type) -> str:
    """The name a plans file gives ``cls``: ``spatialrec.integrations.nnunet.<class>``, the package
    that re-exports it, so that plans written before the package was split keep resolving."""
    # Not cls.__module__: under `python -m` a module runs as "__main__", which nnU-Net could not import.
    return f"{PACKAGE}.{cls.__qualname__}"


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


__all__ = [
    "BASE_CLASSES",
    "DEFAULT_SDN_OPTIONS",
    "PACKAGE",
    "SDNPlainConvUNet",
    "SDNResidualEncoderUNet",
    "SDN_CLASSES",
    "dotted_name",
    "load_plain_weights",
    "sdn_conv_names",
]
