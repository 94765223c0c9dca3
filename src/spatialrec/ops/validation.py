"""Argument checks shared by the 2D and 3D scans (one place for every error message)."""

from __future__ import annotations

import torch

_LAYOUTS = {2: "(B, S, H, W)", 3: "(B, S, D, H, W)"}
_NEIGHBOURS = {2: 3, 3: 9}  # neighbours on the previous line (2D) or plane (3D)


def _check_param(name: str, p: object, shape: tuple[int, ...], x: torch.Tensor, spatial_dims: int) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {p.dtype}")
    if tuple(p.shape) != shape:
        k = _NEIGHBOURS[spatial_dims]
        scan = "scan" if spatial_dims == 2 else "3D scan"
        raise ValueError(
            f"{name} has shape {tuple(p.shape)}, expected {shape} for state size S={x.shape[1]} "
            f"({scan}: weight_ih: (3S, {k}S), weight_hh: (3S, S), biases: (3S,))"
        )
    if p.device != x.device:
        raise ValueError(f"{name} is on {p.device} but x is on {x.device}; move both to one device")


def check_scan_inputs(
    x: object,
    weight_ih: object,
    weight_hh: object,
    bias_ih: object,
    bias_hh: object,
    spatial_dims: int,
) -> None:
    """Raise a ``TypeError``/``ValueError`` naming the argument if a scan's inputs are malformed.

    Args:
        x: ``(B, S, H, W)`` for ``spatial_dims=2``, ``(B, S, D, H, W)`` for 3.
        weight_ih: ``(3S, 3S)`` in 2D, ``(3S, 9S)`` in 3D; weight_hh ``(3S, S)``; biases ``(3S,)``.
    """
    layout = _LAYOUTS[spatial_dims]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"x must have shape {layout} ({spatial_dims + 2} dims), got {x.dim()} dims with shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating-point dtype (float32, float64, bfloat16, float16), got {x.dtype}")
    if min(x.shape) < 1:
        raise ValueError(f"x must have non-zero batch, state and spatial sizes, got shape {tuple(x.shape)}")
    s = x.shape[1]
    _check_param("weight_ih", weight_ih, (3 * s, _NEIGHBOURS[spatial_dims] * s), x, spatial_dims)
    _check_param("weight_hh", weight_hh, (3 * s, s), x, spatial_dims)
    _check_param("bias_ih", bias_ih, (3 * s,), x, spatial_dims)
    _check_param("bias_hh", bias_hh, (3 * s,), x, spatial_dims)
