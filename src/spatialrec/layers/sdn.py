"""2D spatial-recurrence modules: one directional GRU sweep, the SDN layer and its residual form."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from ..ops import (
    DirectionLike,
    directional_gru_scan,
    directional_gru_scan_sequence,
    normalize_direction,
    normalize_directions,
    resolve_backend,
)

IntPair = Union[int, tuple[int, int]]


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_input(x: object, in_channels: int, ndim: int = 4, layout: str = "(B, C, H, W)") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"input must have shape {layout} ({ndim} dims), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"input has {x.shape[1]} channels, expected in_channels={in_channels} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"input must have a floating-point dtype, got {x.dtype}")
    if any(s < 1 for s in x.shape[2:]):
        raise ValueError(f"input has a zero-sized spatial dimension: shape {tuple(x.shape)}")
    return x


class _DirectionalGRU(nn.Module):
    """One sweep's parameters and the call of its scan op; 2D and 3D differ only in the class
    attributes below (neighbours per position, direction names, scan op, input layout)."""

    _neighbours: int
    _ndim: int
    _layout: str
    _normalize = staticmethod(normalize_direction)
    _resolve = staticmethod(resolve_backend)
    _scan = staticmethod(directional_gru_scan)

    def __init__(self, state_size: int, direction: DirectionLike, backend: str = "auto") -> None:
        super().__init__()
        self.state_size = _check_positive_int("state_size", state_size)
        self.direction = self._normalize(direction)
        self._resolve(backend)  # fail at construction on an unknown backend name
        self.backend = backend
        s = state_size
        self.weight_ih = nn.Parameter(torch.empty(3 * s, self._neighbours * s))
        self.weight_hh = nn.Parameter(torch.empty(3 * s, s))
        self.bias_ih = nn.Parameter(torch.empty(3 * s))
        self.bias_hh = nn.Parameter(torch.empty(3 * s))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.state_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.state_size, ndim=self._ndim, layout=self._layout)
        return self._scan(
            x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.direction, backend=self.backend
        )

    def extra_repr(self) -> str:
        return f"state_size={self.state_size}, direction={self.direction!r}, backend={self.backend!r}"


class DirectionalGRU2d(_DirectionalGRU):
    """One directional GRU sweep with its own parameters.

    Args:
        state_size: ``S``, the number of channels of the state map.
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"`` or the published codes 0-3.
        backend: scan backend, see :func:`spatialrec.ops.directional_gru_scan`.

    Shape:
        ``(B, S, H, W) -> (B, S, H, W)``.

    Parameters ``weight_ih (3S, 3S)``, ``weight_hh (3S, S)``, ``bias_ih (3S,)``, ``bias_hh (3S,)``
    are initialised uniform in ``(-1/sqrt(S), 1/sqrt(S))``.

    Example:
        >>> sweep = DirectionalGRU2d(16, "down")
        >>> sweep(torch.randn(2, 16, 8, 12)).shape
        torch.Size([2, 16, 8, 12])
    """

    _neighbours = 3
    _ndim = 4
    _layout = "(B, C, H, W)"


class SpatialDependencyLayer(nn.Module):
    """The Spatial Dependency Network (SDN) layer.

    ``h = tanh(project_in(x))`` (a ``Conv2d``, or ``ConvTranspose2d`` when ``transposed``), then
    one directional GRU sweep per entry of ``directions``, in that order, each reading the output
    of the previous one, then ``y = project_out(h)`` (a 1x1 ``Conv2d``). Every output pixel can
    depend on every input pixel upstream of it in the sweep order, at a cost linear in the pixels.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        state_size: ``S``, channels of the recurrent state (the paper uses 150).
        directions: non-empty sequence of directions, names or published codes 0 (right),
            1 (left), 2 (down), 3 (up); repeats allowed; the order is the composition order.
        kernel_size, stride, padding: geometry of the project-in convolution.
        transposed: project in with ``ConvTranspose2d`` (up-sampling).
        output_padding: extra size on one side of a transposed output (only with ``transposed``).
        backend: scan backend for every sweep, see :func:`spatialrec.ops.directional_gru_scan`.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H', W')`` with ``H', W'`` those of the
        project-in convolution.

    Example:
        >>> layer = SpatialDependencyLayer(32, 32, state_size=64, directions=("right", "down"))
        >>> layer(torch.randn(2, 32, 24, 40)).shape
        torch.Size([2, 32, 24, 40])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 150,
        directions: Sequence[DirectionLike] = ("right", "down"),
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        transposed: bool = False,
        output_padding: IntPair = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.state_size = _check_positive_int("state_size", state_size)
        self.directions = normalize_directions(directions)
        if not isinstance(transposed, bool):
            raise TypeError(f"transposed must be a bool, got {type(transposed).__name__}")
        if output_padding not in (0, (0, 0)) and not transposed:
            raise ValueError(f"output_padding={output_padding!r} needs transposed=True")
        self.transposed = transposed
        if transposed:
            self.project_in: nn.Module = nn.ConvTranspose2d(
                in_channels, state_size, kernel_size, stride, padding, output_padding=output_padding
            )
        else:
            self.project_in = nn.Conv2d(in_channels, state_size, kernel_size, stride, padding)
        self.sweeps = nn.ModuleList(DirectionalGRU2d(state_size, d, backend) for d in self.directions)
        self.project_out = nn.Conv2d(state_size, out_channels, 1)

    @property
    def backend(self) -> str:
        return self.sweeps[0].backend

    @backend.setter
    def backend(self, value: str) -> None:
        resolve_backend(value)
        for sweep in self.sweeps:
            sweep.backend = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels)
        backends = {sweep.backend for sweep in self.sweeps}
        if len(backends) > 1:
            # Sweeps given different backends one by one: run them one by one.
            h = torch.tanh(self.project_in(x))
            for sweep in self.sweeps:
                h = sweep(h)
            return self.project_out(h)
        backend = backends.pop()
        restore_layout = False
        if resolve_backend(backend, x) == "fused" and x.device.type == "cpu":
            # The fused scan works on S-innermost lines: a channels-last input (cheap at
            # in_channels << S) makes the convolution produce channels-last states, turning the
            # scan's layout changes into copies of S-long runs; oneDNN's convolutions are also
            # faster in that format on the CPU.
            restore_layout = x.is_contiguous()
            x = x.contiguous(memory_format=torch.channels_last)
        # In place: the convolution's backward does not need its output, and a fresh full-size
        # tensor costs page faults.
        h = self.project_in(x).tanh_()
        params = [(s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh) for s in self.sweeps]
        h = directional_gru_scan_sequence(h, params, self.directions, backend=backend)
        y = self.project_out(h)
        # Hand back the caller's memory format: a channels-last output would change which
        # convolution algorithms run downstream (and so their rounding) in the caller's network.
        return y.contiguous() if restore_layout else y

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


class ResidualSDN(nn.Module):
    """Gated residual SDN: a convolution and an SDN layer mixed by a learned per-pixel gate.

    ``c = conv(x)`` (same geometry as the SDN's project-in, ``out_channels`` channels);
    ``s, g = SDN(in_channels -> 2 * out_channels)(x).chunk(2, dim=1)``;
    ``y = sigmoid(g) * c + (1 - sigmoid(g)) * s``.

    Takes the same arguments as :class:`SpatialDependencyLayer`. Its sub-modules are ``conv``
    and ``sdn``.

    Example:
        >>> block = ResidualSDN(16, 32, state_size=32, stride=2)
        >>> block(torch.randn(1, 16, 20, 30)).shape
        torch.Size([1, 32, 10, 15])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        state_size: int = 150,
        directions: Sequence[DirectionLike] = ("right", "down"),
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        transposed: bool = False,
        output_padding: IntPair = 0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.sdn = SpatialDependencyLayer(
            in_channels, 2 * _check_positive_int("out_channels", out_channels), state_size, directions,
            kernel_size, stride, padding, transposed, output_padding, backend,
        )  # fmt: skip
        self.in_channels = in_channels
        self.out_channels = out_channels
        if transposed:
            self.conv: nn.Module = nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride, padding, output_padding=output_padding
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)

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
        _check_input(x, self.in_channels)
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
