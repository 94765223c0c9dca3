"""Argument checks shared by every layer, block, model and converter: one place for each message.

Bottom level: imports only torch. One error type per kind of mistake, everywhere in the library:

- ``TypeError``: the value has the wrong type (a float where an int is expected, a non-tensor,
  an integer tensor, a tensor of another dtype than the module's parameters);
- ``ValueError``: the type is right but the value is not (out of range, unknown name, wrong
  number of dimensions or channels, a spatial size too small).

Every message names the argument, the value given and what is expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Optional, Union

import torch

SPATIAL_DIMS: tuple[int, ...] = (2, 3)
"""The numbers of spatial dimensions the library supports."""

SizeLike = Union[int, Sequence[int]]


def check_int(name: str, value: object, minimum: Optional[int] = 1, maximum: Optional[int] = None) -> int:
    """Return ``value`` (a Python or NumPy integer: any :class:`numbers.Integral` but a bool) as an
    int in ``[minimum, maximum]``; ``None`` leaves that side unbounded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return v


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (a ``TypeError`` for a non-string)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {tuple(choices)}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {tuple(choices)}")
    return value


def check_float(
    name: str, value: object, low: float, high: Optional[float] = None, *, low_open: bool = False, high_open: bool = False
) -> float:
    """Return ``float(value)`` if it is a real number in the interval ``[low, high]`` (ends open as asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high or v != v:
        lo = f"{'(' if low_open else '['}{low}"
        hi = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return v


def check_spatial_dims(spatial_dims: object, argname: str = "spatial_dims") -> int:
    """Return ``spatial_dims`` if it is 2 or 3."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int):
        raise TypeError(f"{argname} must be an int (2 or 3), got {type(spatial_dims).__name__} {spatial_dims!r}")
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"{argname}={spatial_dims} is not supported; expected one of {SPATIAL_DIMS}")
    return spatial_dims


def check_size(name: str, value: object, spatial_dims: int, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``spatial_dims`` ints, each ``>= minimum``, as a tuple (convolution geometry).

    Example:
        >>> check_size("stride", 2, 3, 1)
        (2, 2, 2)
    """
    items = [value] * spatial_dims if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) != spatial_dims:
        raise TypeError(f"{name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int or a tuple of {spatial_dims} ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum} on every axis, got {value!r}")
    return tuple(items)


def layout(spatial_dims: int, channels: str = "C") -> str:
    """The NC(D)HW layout text used in messages: ``"(B, C, H, W)"`` or ``"(B, C, D, H, W)"``."""
    return f"(B, {channels}, {'D, ' if spatial_dims == 3 else ''}H, W)"


def check_input(
    x: object,
    in_channels: int,
    spatial_dims: int,
    *,
    what: str = "input",
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Check a module input ``x: (B, in_channels, *spatial)``.

    ``dtype``: the dtype of the module's parameters. An input of another floating dtype is
    refused (a ``TypeError`` saying how to fix it) unless autocast is active on its device,
    where the convolutions cast it themselves.
    """
    shape = layout(spatial_dims)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != spatial_dims + 2:
        hint = ""
        if x.dim() in (4, 5) and x.dim() != spatial_dims + 2:
            hint = f"; a {x.dim() - 2}D input needs a module built with spatial_dims={x.dim() - 2}"
        raise ValueError(f"{what} must have shape {shape} ({spatial_dims + 2} dims), got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must have a floating-point dtype, got {x.dtype}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{what} has {x.shape[1]} channels, expected in_channels={in_channels} (shape {tuple(x.shape)})")
    if x.shape[0] < 1:
        raise ValueError(f"{what} has an empty batch: shape {tuple(x.shape)}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{what} has a zero-sized spatial dimension: shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{what} has dtype {x.dtype} but the module's parameters are {dtype}; convert one to the "
            f"other (x.to({dtype}) or module.to({x.dtype})) or run under torch.autocast"
        )
    return x


__all__ = [
    "SPATIAL_DIMS",
    "check_bool",
    "check_choice",
    "check_float",
    "check_input",
    "check_int",
    "check_size",
    "check_spatial_dims",
    "layout",
]
