"""Spatial-recurrence modules for maps and volumes: one directional GRU sweep, the SDN layer and its
residual form. The number of spatial dimensions is an argument, ``spatial_dims`` (2 or 3).

The ``*2d``/``*3d`` classes at the end are thin aliases that fix ``spatial_dims`` (and, in 3D,
the former 3D defaults); they keep the same state_dict keys.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union, cast

import torch
from torch import nn

from ..checks import check_bool, check_choice, check_input, check_int, check_size, check_spatial_dims
from ..ops.gates import CARRIES, check_carry
from ..ops import (
    DEFAULT_DIRECTIONS,
    DirectionLike,
    normalize_direction,
    normalize_directions,
    num_neighbours,
    project_in_activation,
    project_out,
    resolve_backend,
    scan_sequence,
    working_layout,
)
from .nd import conv_cls

SizeArg = Union[int, Sequence[int]]
PaddingArg = Union[int, Sequence[int], str]

DEFAULT_STATE_SIZE: dict[int, int] = {2: 150, 3: 32}
"""Default ``S`` per number of spatial dimensions: the paper's 150 on 2D maps; 32 on volumes,
where ``S`` values per voxel per sweep are what the memory pays for."""

COMPOSITIONS: tuple[str, ...] = ("parallel", "serial")
"""How an SDN layer composes its sweeps: ``"parallel"`` (every sweep reads the project-in map,
their outputs are averaged) or ``"serial"`` (each sweep reads the previous one's output, the
published layer)."""

DEFAULT_CELL: dict[str, str] = {"carry": "line", "composition": "parallel"}
"""The cell of a new SDN layer: sweeps that keep the previous line's state (an identity path along
each sweep) side by side. docs/holistic.md has the ablation behind it: with the published cell a
far grey-level cue is not learned from any side in four directions, in any composition."""

PUBLISHED_CELL: dict[str, str] = {"carry": "prior", "composition": "serial"}
"""The cell of the published SDN layer (and of every spatialrec layer before 0.2): the update keeps
the position's own value, sweeps composed in order. ``from_published_args``, published weights and
state_dicts saved by earlier versions use it."""


def _adopt_published_cell(module: nn.Module, local_metadata: dict, prefix: str) -> None:
    """A state_dict saved before the cell options existed (module version 1) was trained with the
    published cell: compute with it, and say so, rather than with weights the cell never saw."""
    version = local_metadata.get("version")
    if version is None or version >= 2:
        return
    cell = {k: getattr(module, k) for k in PUBLISHED_CELL if hasattr(module, k)}
    if all(cell[k] == PUBLISHED_CELL[k] for k in cell):
        return
    import warnings

    warnings.warn(
        f"{type(module).__name__} {prefix.rstrip('.') or '(root)'}: this state_dict was saved by spatialrec < 0.2, whose "
        f"layers used the published cell; switching this layer from {cell} to {PUBLISHED_CELL} so that it computes "
        "what was trained (build it with those arguments to silence this warning)",
        UserWarning,
        stacklevel=4,
    )
    for k, v in PUBLISHED_CELL.items():
        if k in cell:
            setattr(module, k, v)


class DirectionalGRU(nn.Module):
    """One directional GRU sweep with its own parameters.

    Args:
        state_size: ``S``, the number of channels of the state map.
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"`` (and in 3D ``"in"``, ``"out"``
            along depth) or the codes 0-3 (0-5 in 3D).
        backend: scan backend, see :func:`spatialrec.ops.directional_gru_scan`.
        spatial_dims: 2 (maps) or 3 (volumes).
        carry: what the update gate's ``(1 - z)`` keeps: ``"line"`` (default, the previous line's
            state) or ``"prior"`` (the position's own value, the published cell); see
            ``docs/maths.md``.

    Shape:
        ``(B, S, H, W) -> (B, S, H, W)`` in 2D, ``(B, S, D, H, W) -> (B, S, D, H, W)`` in 3D.

    Parameters ``weight_ih (3S, kS)`` (``k`` = 3 neighbours in 2D, 9 in 3D), ``weight_hh (3S, S)``,
    ``bias_ih (3S,)``, ``bias_hh (3S,)`` are initialised uniform in ``(-1/sqrt(S), 1/sqrt(S))``.

    Example:
        >>> DirectionalGRU(16, "down")(torch.randn(2, 16, 8, 12)).shape
        torch.Size([2, 16, 8, 12])
        >>> DirectionalGRU(8, "in", spatial_dims=3)(torch.randn(1, 8, 6, 10, 12)).shape
        torch.Size([1, 8, 6, 10, 12])
    """

    # Version 2: the carry option (state_dicts of version 1 were trained with carry="prior").
    _version = 2

    def __init__(self, state_size: int, direction: DirectionLike, backend: str = "auto", spatial_dims: int = 2, carry: str = "line") -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.state_size = check_int("state_size", state_size)
        self.direction = normalize_direction(direction, spatial_dims)
        resolve_backend(backend)  # fail at construction on an unknown backend name
        self.backend = backend
        self.carry = check_carry(carry)
        s = state_size
        self.weight_ih = nn.Parameter(torch.empty(3 * s, num_neighbours(spatial_dims) * s))
        self.weight_hh = nn.Parameter(torch.empty(3 * s, s))
        self.bias_ih = nn.Parameter(torch.empty(3 * s))
        self.bias_hh = nn.Parameter(torch.empty(3 * s))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.state_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.state_size, self.spatial_dims, dtype=self.weight_hh.dtype)
        # Through the registered op (one node under compile/export), see spatialrec.ops.library.
        params = [(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)]
        return scan_sequence(x, params, (self.direction,), self.backend, carry=self.carry)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):  # type: ignore[no-untyped-def]
        _adopt_published_cell(self, local_metadata, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def extra_repr(self) -> str:
        dims = "" if self.spatial_dims == 2 else f", spatial_dims={self.spatial_dims}"
        return f"state_size={self.state_size}, direction={self.direction!r}, carry={self.carry!r}, backend={self.backend!r}{dims}"


def _project_in(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: SizeArg,
    stride: SizeArg,
    padding: PaddingArg,
    transposed: bool,
    output_padding: SizeArg,
) -> nn.Module:
    """The project-in convolution (also the residual conv branch), its geometry checked up front."""
    k = check_size("kernel_size", kernel_size, spatial_dims, 1)
    st = check_size("stride", stride, spatial_dims, 1)
    op = check_size("output_padding", output_padding, spatial_dims, 0)
    if not check_bool("transposed", transposed):
        if any(op):
            raise ValueError(f"output_padding={output_padding!r} needs transposed=True")
        # Plain convolutions also take padding="same" / "valid" (as torch's do; not transposed ones).
        p: Union[str, tuple[int, ...]] = (
            check_choice("padding", padding, ("same", "valid"))
            if isinstance(padding, str)
            else check_size("padding", padding, spatial_dims, 0)
        )
        return conv_cls(spatial_dims)(in_channels, out_channels, k, st, p)
    p = check_size("padding", padding, spatial_dims, 0)
    if any(o >= max(s, 1) for o, s in zip(op, st)):
        raise ValueError(f"output_padding={output_padding!r} must be smaller than stride={stride!r} on every axis")
    return conv_cls(spatial_dims, transposed=True)(in_channels, out_channels, k, st, p, output_padding=op)


def _geometry_repr(conv: nn.Module, transposed: bool) -> str:
    s = f"kernel_size={conv.kernel_size}, stride={conv.stride}, padding={conv.padding}"
    return s + (f", transposed=True, output_padding={conv.output_padding}" if transposed else "")


@dataclass(frozen=True)
class _Geometry:
    """The project-in geometry of an SDN layer, as given (checked where the convolution is built)."""

    kernel_size: SizeArg
    stride: SizeArg
    padding: PaddingArg
    transposed: bool
    output_padding: SizeArg

    def conv(self, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
        return _project_in(spatial_dims, in_channels, out_channels, self.kernel_size, self.stride, self.padding, self.transposed, self.output_padding)


class _SDNArguments(nn.Module):
    """The constructor both :class:`SpatialDependencyLayer` and :class:`ResidualSDN` take (see the
    former for the arguments): checks them, keeps ``spatial_dims``, ``in_channels``,
    ``out_channels``, ``state_size``, ``directions`` and ``transposed``, and lets the subclass
    build its sub-modules (:meth:`_build`, which returns the convolution whose geometry the repr
    shows). One signature for both, so they cannot drift apart."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: Optional[int] = None,
        directions: Optional[Sequence[DirectionLike]] = None,
        kernel_size: SizeArg = 3,
        stride: SizeArg = 1,
        padding: PaddingArg = 1,
        transposed: bool = False,
        output_padding: SizeArg = 0,
        backend: str = "auto",
        spatial_dims: int = 2,
        carry: str = DEFAULT_CELL["carry"],
        composition: str = DEFAULT_CELL["composition"],
    ) -> None:
        super().__init__()
        self._carry = check_carry(carry)
        self._composition = check_choice("composition", composition, COMPOSITIONS)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.state_size = check_int("state_size", DEFAULT_STATE_SIZE[spatial_dims] if state_size is None else state_size)
        self.directions = normalize_directions(DEFAULT_DIRECTIONS[spatial_dims] if directions is None else directions, spatial_dims)
        resolve_backend(backend)  # fail at construction on an unknown backend name
        self.transposed = transposed
        conv = self._build(_Geometry(kernel_size, stride, padding, transposed, output_padding), backend)
        self._geometry_text = _geometry_repr(conv, transposed)

    def _build(self, geometry: _Geometry, backend: str) -> nn.Module:
        raise NotImplementedError

    def extra_repr(self) -> str:
        dims = "" if self.spatial_dims == 2 else f", spatial_dims={self.spatial_dims}"
        return (
            f"{self.in_channels}, {self.out_channels}, state_size={self.state_size}, directions={self.directions}, "
            f"carry={self.carry!r}, composition={self.composition!r}, {self._geometry_text}, backend={self.backend!r}{dims}"
        )


class SpatialDependencyLayer(_SDNArguments):
    """The Spatial Dependency Network (SDN) layer, for maps (2D) and volumes (3D).

    ``h = tanh(project_in(x))`` (a ``ConvNd``, or ``ConvTransposeNd`` when ``transposed``), then
    one directional GRU sweep per entry of ``directions``, then ``y = project_out(h)`` (a 1x1
    ``ConvNd``), at a cost linear in the pixels. By default (``composition="parallel"``) every
    sweep reads ``h`` and their outputs are averaged, and each sweep keeps the previous line's
    state (``carry="line"``): a pixel reads every sweep's upstream half-space through an identity
    path, so four directions give context from every side. ``carry="prior", composition="serial"``
    is the published layer (each sweep reads the previous one's output; :data:`PUBLISHED_CELL`).
    ``docs/maths.md`` has the equations, ``docs/holistic.md`` the ablation behind the default.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        state_size: ``S``, channels of the recurrent state; default 150 in 2D (the paper), 32 in
            3D (the sweeps keep about ``S`` values per voxel per sweep for the backward).
        directions: non-empty ordered sequence of directions, names or codes 0 (right), 1 (left),
            2 (down), 3 (up), and in 3D 4 (in), 5 (out); repeats allowed; the order is the
            composition order. Default ``("right", "down")`` in 2D, ``("right", "down", "in")``
            in 3D (one sweep per axis).
        kernel_size, stride, padding: geometry of the project-in convolution.
        transposed: project in with a transposed convolution (up-sampling).
        output_padding: extra size on one side of a transposed output (only with ``transposed``).
        backend: scan backend for every sweep, see :func:`spatialrec.ops.directional_gru_scan`.
        spatial_dims: 2 (``(B, C, H, W)`` maps, default) or 3 (``(B, C, D, H, W)`` volumes).
        carry: what each sweep's update keeps, ``"line"`` (default) or ``"prior"`` (published),
            see :data:`spatialrec.ops.gates.CARRIES`.
        composition: ``"parallel"`` (default) or ``"serial"`` (published), see :data:`COMPOSITIONS`.

    Shape:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial')`` with ``spatial'`` that of
        the project-in convolution.

    Raises:
        TypeError, ValueError: at construction, for a malformed argument (named in the message);
            in ``forward``, for an input of the wrong rank, channels or dtype.

    Example:
        >>> layer = SpatialDependencyLayer(32, 32, state_size=64, directions=("right", "down"))
        >>> layer(torch.randn(2, 32, 24, 40)).shape
        torch.Size([2, 32, 24, 40])
        >>> SpatialDependencyLayer(16, 16, state_size=8, spatial_dims=3)(torch.randn(1, 16, 6, 10, 12)).shape
        torch.Size([1, 16, 6, 10, 12])
    """

    # Version 2: the carry and composition options (version 1 state_dicts: the published cell).
    _version = 2

    def _build(self, geometry: _Geometry, backend: str) -> nn.Module:
        self.project_in = geometry.conv(self.spatial_dims, self.in_channels, self.state_size)
        self.sweeps = nn.ModuleList(
            DirectionalGRU(self.state_size, d, backend, self.spatial_dims, self._carry) for d in self.directions
        )
        self.project_out = conv_cls(self.spatial_dims)(self.state_size, self.out_channels, 1)
        return self.project_in

    @property
    def carry(self) -> str:
        """What every sweep's update keeps (``"line"`` or ``"prior"``); settable."""
        return self._carry

    @carry.setter
    def carry(self, value: str) -> None:
        self._carry = check_carry(value)
        for sweep in self._sweeps():
            sweep.carry = value

    @property
    def composition(self) -> str:
        """``"parallel"`` or ``"serial"``; settable."""
        return self._composition

    @composition.setter
    def composition(self, value: str) -> None:
        self._composition = check_choice("composition", value, COMPOSITIONS)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):  # type: ignore[no-untyped-def]
        _adopt_published_cell(self, local_metadata, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def _sweeps(self) -> list[DirectionalGRU]:
        return [cast(DirectionalGRU, s) for s in self.sweeps]

    @property
    def backend(self) -> str:
        return self._sweeps()[0].backend

    @backend.setter
    def backend(self, value: str) -> None:
        resolve_backend(value)
        for sweep in self._sweeps():
            sweep.backend = value

    def _common_backend(self) -> Optional[str]:
        """The backend of every sweep, or ``None`` when sweeps were given different ones."""
        backends = {sweep.backend for sweep in self._sweeps()}
        return backends.pop() if len(backends) == 1 else None

    def _sweep(self, h: torch.Tensor, backend: Optional[str]) -> torch.Tensor:
        """The sweeps, composed as :attr:`composition` says: in order (one scan of all directions,
        or, with different backends per sweep, one sweep module after the other), or side by side
        on ``h`` and averaged."""
        sweeps = self._sweeps()
        if self._composition == "parallel":
            if backend is None:
                outs = [sweep(h) for sweep in sweeps]
            else:
                outs = [
                    scan_sequence(h, [(s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh)], (s.direction,), backend, carry=self._carry)
                    for s in sweeps
                ]
            # The mean, accumulated in place into one new tensor (no backward reads it, and each
            # full-size temporary would be a fresh allocation; the ops' outputs themselves may not
            # be modified in place); it keeps the scans' memory format (channels-last in 2D),
            # which the project-out then uses.
            if len(outs) == 1:
                return outs[0]
            total = outs[0] + outs[1]
            for o in outs[2:]:
                total.add_(o)
            return total.div_(len(outs))
        if backend is None:
            for sweep in sweeps:
                h = sweep(h)
            return h
        params = [(s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh) for s in sweeps]
        return scan_sequence(h, params, self.directions, backend, carry=self._carry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.spatial_dims, dtype=self.project_out.weight.dtype)
        backend = self._common_backend()
        # The memory layout and kernels that suit the backend on x's device (spatialrec.ops.projection).
        layout = working_layout(x, backend)
        h = project_in_activation(x, self.project_in, layout)  # tanh(project_in(x))
        h = self._sweep(h, backend)
        return project_out(h, self.project_out, layout)


class ResidualSDN(_SDNArguments):
    """Gated residual SDN: a convolution and an SDN layer mixed by a learned per-pixel gate.

    ``c = conv(x)`` (same geometry as the SDN's project-in, ``out_channels`` channels);
    ``s, g = SDN(in_channels -> 2 * out_channels)(x).chunk(2, dim=1)``;
    ``y = sigmoid(g) * c + (1 - sigmoid(g)) * s``.

    Takes the same arguments as :class:`SpatialDependencyLayer`, ``spatial_dims`` included. Its
    sub-modules are ``conv`` and ``sdn``.

    Example:
        >>> block = ResidualSDN(16, 32, state_size=32, stride=2)
        >>> block(torch.randn(1, 16, 20, 30)).shape
        torch.Size([1, 32, 10, 15])
        >>> ResidualSDN(8, 16, state_size=8, stride=2, spatial_dims=3)(torch.randn(1, 8, 6, 10, 12)).shape
        torch.Size([1, 16, 3, 5, 6])
    """

    def _build(self, geometry: _Geometry, backend: str) -> nn.Module:
        self.sdn = SpatialDependencyLayer(
            self.in_channels, 2 * self.out_channels, self.state_size, self.directions, geometry.kernel_size,
            geometry.stride, geometry.padding, geometry.transposed, geometry.output_padding, backend, self.spatial_dims,
            self._carry, self._composition,
        )  # fmt: skip
        self.conv = geometry.conv(self.spatial_dims, self.in_channels, self.out_channels)
        return self.conv

    @property
    def backend(self) -> str:
        return self.sdn.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.sdn.backend = value

    @property
    def carry(self) -> str:
        """The cell of its SDN layer (see :class:`SpatialDependencyLayer`); settable."""
        return self.sdn.carry

    @carry.setter
    def carry(self, value: str) -> None:
        self.sdn.carry = value

    @property
    def composition(self) -> str:
        """The composition of its SDN layer; settable."""
        return self.sdn.composition

    @composition.setter
    def composition(self, value: str) -> None:
        self.sdn.composition = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.spatial_dims, dtype=self.sdn.project_out.weight.dtype)
        s, g = self.sdn(x).chunk(2, dim=1)
        gate = torch.sigmoid(g)
        return gate * self.conv(x) + (1 - gate) * s


# ---------------------------------------------------------------------------- thin aliases (see the module docstring)


class DirectionalGRU2d(DirectionalGRU):
    """:class:`DirectionalGRU` with ``spatial_dims=2``."""

    __init__ = functools.partialmethod(DirectionalGRU.__init__, spatial_dims=2)


class DirectionalGRU3d(DirectionalGRU):
    """:class:`DirectionalGRU` with ``spatial_dims=3``."""

    __init__ = functools.partialmethod(DirectionalGRU.__init__, spatial_dims=3)


class SpatialDependencyLayer3d(SpatialDependencyLayer):
    """:class:`SpatialDependencyLayer` with ``spatial_dims=3`` (default ``S=32``, directions right, down, in)."""

    __init__ = functools.partialmethod(SpatialDependencyLayer.__init__, spatial_dims=3)


class ResidualSDN3d(ResidualSDN):
    """:class:`ResidualSDN` with ``spatial_dims=3`` (default ``S=32``, directions right, down, in)."""

    __init__ = functools.partialmethod(ResidualSDN.__init__, spatial_dims=3)


__all__ = [
    "COMPOSITIONS",
    "DEFAULT_CELL",
    "DEFAULT_STATE_SIZE",
    "PUBLISHED_CELL",
    "DirectionalGRU",
    "DirectionalGRU2d",
    "DirectionalGRU3d",
    "ResidualSDN",
    "ResidualSDN3d",
    "SpatialDependencyLayer",
    "SpatialDependencyLayer3d",
]
