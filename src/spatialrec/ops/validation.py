"""Argument checks of the scan op, for every number of spatial dimensions (one place for every message)."""

from __future__ import annotations

import torch

from ..checks import layout
from .directions import num_neighbours


def _check_param(name: str, p: object, shape: tuple[int, ...], x: torch.Tensor) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {p.dtype}")
    if tuple(p.shape) != shape:
        dims = x.dim() - 2
        raise ValueError(
            f"{name} has shape {tuple(p.shape)}, expected {shape} for state size S={x.shape[1]} "
            f"({dims}D scan: weight_ih: (3S, {num_neighbours(dims)}S), weight_hh: (3S, S), biases: (3S,))"
        )
    if p.device != x.device:
        raise ValueError(f"{name} is on {p.device} but x is on {x.device}; move both to one device")


def check_scan_inputs(x: object, weight_ih: object, weight_hh: object, bias_ih: object, bias_hh: object) -> int:
    """Raise a ``TypeError``/``ValueError`` naming the argument if a scan's inputs are malformed.

    Args:
        x: ``(B, S, H, W)`` or ``(B, S, D, H, W)``.
        weight_ih: ``(3S, 3S)`` in 2D, ``(3S, 9S)`` in 3D; weight_hh ``(3S, S)``; biases ``(3S,)``.

    Returns:
        The number of spatial dimensions of ``x`` (2 or 3).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape {layout(2, 'S')} or {layout(3, 'S')}, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(
            f"x must have shape {layout(2, 'S')} or {layout(3, 'S')} (4 or 5 dims), got {x.dim()} dims "
            f"with shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating-point dtype (float32, float64, bfloat16, float16), got {x.dtype}")
    if min(x.shape) < 1:
        raise ValueError(f"x must have non-zero batch, state and spatial sizes, got shape {tuple(x.shape)}")
    s, dims = x.shape[1], x.dim() - 2
    _check_param("weight_ih", weight_ih, (3 * s, num_neighbours(dims) * s), x)
    _check_param("weight_hh", weight_hh, (3 * s, s), x)
    _check_param("bias_ih", bias_ih, (3 * s,), x)
    _check_param("bias_hh", bias_hh, (3 * s,), x)
    return dims


__all__ = ["check_scan_inputs"]
