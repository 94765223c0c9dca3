"""Volumetric (3D) spatial-recurrence modules: one plane-by-plane GRU sweep, the 3D SDN layer and its
residual form. They mirror :mod:`spatialrec.layers.sdn` with ``Conv3d``/``ConvTranspose3d`` and
:func:`spatialrec.ops.directional_gru_scan3d`.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from ..ops import DirectionLike, directional_gru_scan3d, normalize_direction3d, normalize_directions3d, resolve_backend3d
from .sdn import _check_input, _check_positive_int, _DirectionalGRU

IntTriple = Union[int, tuple[int, int, int]]

_LAYOUT_3D = "(B, C, D, H, W)"

DEFAULT_DIRECTIONS_3D: tuple[str, ...] = ("right", "down", "in")
"""One sweep per axis, composed W, then H, then D: after them every voxel has seen every voxel
with lower-or-equal index along each axis (its whole upstream octant)."""


class DirectionalGRU3d(_DirectionalGRU):
    """One plane-by-plane GRU sweep of a state volume, with its own parameters.

    Args:
        state_size: ``S``, the number of channels of the state volume.
        direction: ``"right"``/``"left"`` (along W), ``"down"``/``"up"`` (along H),
            ``"in"``/``"out"`` (along D), or the codes 0-5 in that order.
        backend: scan backend, see :func:`spatialrec.ops.directional_gru_scan3d`.

    Shape:
        ``(B, S, D, H, W) -> (B, S, D, H, W)``.

    Parameters ``weight_ih (3S, 9S)``, ``weight_hh (3S, S)``, ``bias_ih (3S,)``, ``bias_hh (3S,)``
    are initialised uniform in ``(-1/sqrt(S), 1/sqrt(S))``, as in 2D.

    Example:
        >>> sweep = DirectionalGRU3d(8, "in")
        >>> sweep(torch.randn(1, 8, 6, 10, 12)).shape
        torch.Size([1, 8, 6, 10, 12])
    """

    _neighbours = 9
    _ndim = 5
    _layout = _LAYOUT_3D
    _normalize = staticmethod(normalize_direction3d)
    _resolve = staticmethod(resolve_backend3d)
    _scan = staticmethod(directional_gru_scan3d)


def _check_output_padding(output_padding: IntTriple, transposed: bool) -> None:
    if output_padding not in (0, (0, 0, 0)) and not transposed:
        raise ValueError(f"output_padding={output_padding!r} needs transposed=True")


def _project_conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntTriple,
    stride: IntTriple,
    padding: IntTriple,
    transposed: bool,
    output_padding: IntTriple,
) -> nn.Module:
    if transposed:
        return nn.ConvTranspose3d(in_channels, out_channels, kernel_size, stride, padding, output_padding=output_padding)
    return nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding)


class SpatialDependencyLayer3d(nn.Module):
    """The volumetric Spatial Dependency Network (SDN) layer.

    ``h = tanh(project_in(x))`` (a ``Conv3d``, or ``ConvTranspose3d`` when ``transposed``), then
    one plane-by-plane GRU sweep per entry of ``directions``, in that order, each reading the
    output of the previous one, then ``y = project_out(h)`` (a 1x1x1 ``Conv3d``). With the
    default directions every output voxel can depend on its whole upstream octant of the volume.

    Memory: the sweeps keep about ``S`` values per voxel per sweep for the backward pass (the
    fused backend keeps only inputs and outputs) and need about ``9 S`` values per voxel
    transiently in the backward pass. The default ``state_size=32`` keeps a ``64^3`` volume at
    about 35 MB per sweep (float32) and its backward transients near 300 MB.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        state_size: ``S``, channels of the recurrent state (default 32; the 2D paper uses 150 on
            2D maps, which is rarely affordable on volumes).
        directions: non-empty sequence of 3D directions, names or codes 0 (right), 1 (left),
            2 (down), 3 (up), 4 (in), 5 (out); repeats allowed; the order is the composition order.
            Default ``("right", "down", "in")``: one sweep per axis.
        kernel_size, stride, padding: geometry of the project-in convolution.
        transposed: project in with ``ConvTranspose3d`` (up-sampling).
        output_padding: extra size on one side of a transposed output (only with ``transposed``).
        backend: scan backend for every sweep, see :func:`spatialrec.ops.directional_gru_scan3d`.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D', H', W')`` with ``D', H', W'`` those
        of the project-in convolution.

    Example:
        >>> layer = SpatialDependencyLayer3d(16, 16, state_size=8)
        >>> layer(torch.randn(1, 16, 6, 10, 12)).shape
        torch.Size([1, 16, 6, 10, 12])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 32,
        directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
        kernel_size: IntTriple = 3,
        stride: IntTriple = 1,
        padding: IntTriple = 1,
        transposed: bool = False,
        output_padding: IntTriple = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.state_size = _check_positive_int("state_size", state_size)
        self.directions = normalize_directions3d(directions)
        if not isinstance(transposed, bool):
            raise TypeError(f"transposed must be a bool, got {type(transposed).__name__}")
        _check_output_padding(output_padding, transposed)
        self.transposed = transposed
        self.project_in = _project_conv3d(
            in_channels, state_size, kernel_size, stride, padding, transposed, output_padding
        )
        self.sweeps = nn.ModuleList(DirectionalGRU3d(state_size, d, backend) for d in self.directions)
        self.project_out = nn.Conv3d(state_size, out_channels, 1)

    @property
    def backend(self) -> str:
        return self.sweeps[0].backend

    @backend.setter
    def backend(self, value: str) -> None:
        resolve_backend3d(value)
        for sweep in self.sweeps:
            sweep.backend = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, ndim=5, layout=_LAYOUT_3D)
        h = torch.tanh(self.project_in(x))
        for sweep in self.sweeps:
            h = sweep(h)
        return self.project_out(h)

    def extra_repr(self) -> str:
        conv = self.project_in
        s = (
            f"{self.in_channels}, {self.out_channels}, state_size={self.state_size}, "
            f"directions={self.directions}, kernel_size={conv.kernel_size}, stride={conv.stride}, "
            f"padding={conv.padding}"
        )
        if self.transposed:
            s += f", transposed=True, output_padding={conv.output_padding}"
        return s + f", backend={self.backend!r}"


class ResidualSDN3d(nn.Module):
    """Gated residual 3D SDN: a convolution and a 3D SDN layer mixed by a learned per-voxel gate.

    ``c = conv(x)`` (a ``Conv3d``/``ConvTranspose3d`` with the SDN's project-in geometry,
    ``out_channels`` channels); ``s, g = SDN3d(in_channels -> 2 * out_channels)(x).chunk(2, dim=1)``;
    ``y = sigmoid(g) * c + (1 - sigmoid(g)) * s``.

    Takes the same arguments as :class:`SpatialDependencyLayer3d`. Its sub-modules are ``conv``
    and ``sdn``.

    Example:
        >>> block = ResidualSDN3d(8, 16, state_size=8, stride=2)
        >>> block(torch.randn(1, 8, 6, 10, 12)).shape
        torch.Size([1, 16, 3, 5, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 32,
        directions: Sequence[DirectionLike] = DEFAULT_DIRECTIONS_3D,
        kernel_size: IntTriple = 3,
        stride: IntTriple = 1,
        padding: IntTriple = 1,
        transposed: bool = False,
        output_padding: IntTriple = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.sdn = SpatialDependencyLayer3d(
            in_channels, 2 * _check_positive_int("out_channels", out_channels), state_size, directions,
            kernel_size, stride, padding, transposed, output_padding, backend,
        )  # fmt: skip
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = _project_conv3d(in_channels, out_channels, kernel_size, stride, padding, transposed, output_padding)

    @property
    def state_size(self) -> int:
        return self.sdn.state_size

    @property
    def directions(self) -> tuple[str, ...]:
        return self.sdn.directions

    @property
    def backend(self) -> str:
        return self.sdn.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.sdn.backend = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, ndim=5, layout=_LAYOUT_3D)
        s, g = self.sdn(x).chunk(2, dim=1)
        gate = torch.sigmoid(g)
        return gate * self.conv(x) + (1 - gate) * s

    def extra_repr(self) -> str:
        conv = self.conv
        s = (
            f"{self.in_channels}, {self.out_channels}, state_size={self.state_size}, "
            f"directions={self.directions}, kernel_size={conv.kernel_size}, stride={conv.stride}, "
            f"padding={conv.padding}"
        )
        if self.sdn.transposed:
            s += f", transposed=True, output_padding={conv.output_padding}"
        return s + f", backend={self.backend!r}"
