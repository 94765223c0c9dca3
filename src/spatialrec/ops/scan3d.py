"""Dispatch of the volumetric directional GRU scan (re-exported by :mod:`spatialrec.ops`).

Backends for 3D:

- ``"reference"``: :mod:`spatialrec.ops.reference3d`, readable, differentiated by autograd.
- ``"fused"``: :mod:`spatialrec.ops.fused3d`, custom autograd function (CPU and CUDA).
- ``"triton"`` and ``"auto"``: there are no Triton kernels for 3D; both run ``"fused"``, whose
  per-plane work is already one cuDNN/oneDNN convolution. ``"auto"`` honours the environment
  variable ``SPATIALREC_BACKEND`` the same way (``reference`` -> reference, anything else -> fused).
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

import torch

from .directions import DirectionLike
from .directions3d import DIRECTIONS_3D, normalize_direction3d
from .validation import check_scan_inputs

ScanFn3d = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]

BACKENDS_3D: tuple[str, ...] = ("reference", "fused")
"""The backends that implement the 3D scan (``"triton"`` and ``"auto"`` resolve to ``"fused"``)."""

_BACKEND_IMPLS_3D: dict[str, tuple[str, str]] = {
    "reference": ("spatialrec.ops.reference3d", "reference_directional_gru_scan3d"),
    "fused": ("spatialrec.ops.fused3d", "fused_directional_gru_scan3d"),
}


def resolve_backend3d(backend: str) -> str:
    """Turn a backend name (possibly ``"auto"`` or ``"triton"``) into the 3D backend that runs.

    Accepts the same names as the 2D op. ``"auto"`` reads ``SPATIALREC_BACKEND``; ``"reference"``
    (given or from the variable) selects the reference backend, every other backend the fused one.

    Raises:
        TypeError: ``backend`` is not a string.
        ValueError: ``backend`` (or the environment variable) names no known backend.
    """
    from . import BACKEND_ENV_VAR, resolve_backend  # late: ops/__init__ imports this module

    resolve_backend(backend)  # validates the name and the environment variable
    name = backend.strip().lower()
    if name == "auto":
        name = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() or "auto"
    return "reference" if name == "reference" else "fused"


def validate_scan3d_inputs(
    x: object,
    weight_ih: object,
    weight_hh: object,
    bias_ih: object,
    bias_hh: object,
) -> None:
    """Raise a ``TypeError``/``ValueError`` naming the argument if the 3D scan's inputs are malformed."""
    check_scan_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh, spatial_dims=3)


def _backend_fn3d(name: str) -> ScanFn3d:
    module, attr = _BACKEND_IMPLS_3D[name]
    return getattr(importlib.import_module(module), attr)


def directional_gru_scan3d(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: DirectionLike,
    backend: str = "auto",
) -> torch.Tensor:
    """Sweep a state volume with a gated recurrent unit, plane by plane, in one direction.

    For ``direction="in"`` plane ``d`` (``d >= 1``) of the output is computed from the already
    swept plane ``d - 1`` (the 3x3 neighbourhood ``(h + dh, w + dw)``, ``dh, dw`` in
    ``(-1, 0, 1)``, zero outside the volume) and from plane ``d`` of the input (the prior), with
    the gate equations of the 2D scan; plane 0 is returned unchanged. The other five directions
    are the same sweep along another axis or sense (see :mod:`spatialrec.ops.directions3d`
    and ``docs/layers.md`` for the normative neighbour order).

    Args:
        x: ``(B, S, D, H, W)`` prior states, floating point (float32, float64, bfloat16, float16).
        weight_ih: ``(3S, 9S)`` weights of the neighbour term (gates r, z, n along rows; the 9
            neighbours, ``S`` values each, along columns).
        weight_hh: ``(3S, S)`` weights of the prior term.
        bias_ih, bias_hh: ``(3S,)`` biases.
        direction: ``"right"``/``"left"`` (along W), ``"down"``/``"up"`` (along H),
            ``"in"``/``"out"`` (along D), or the codes 0-5 in that order.
        backend: ``"auto"`` (default), ``"reference"``, ``"fused"``; ``"triton"`` runs the fused
            backend (no Triton kernels for 3D).

    Returns:
        ``(B, S, D, H, W)`` swept states, dtype of ``x``. Gates are computed in float32
        (float64 for float64 inputs), also under ``torch.autocast``.

    Example:
        >>> S = 4
        >>> x = torch.randn(1, S, 5, 6, 7)
        >>> w_ih, w_hh = torch.randn(3 * S, 9 * S), torch.randn(3 * S, S)
        >>> b_ih, b_hh = torch.zeros(3 * S), torch.zeros(3 * S)
        >>> directional_gru_scan3d(x, w_ih, w_hh, b_ih, b_hh, "in").shape
        torch.Size([1, 4, 5, 6, 7])
    """
    validate_scan3d_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh)
    name = normalize_direction3d(direction)
    fn = _backend_fn3d(resolve_backend3d(backend))
    # The gate precision is the op's business, not autocast's: run the backend outside autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        return fn(x, weight_ih, weight_hh, bias_ih, bias_hh, name)


__all__ = [
    "BACKENDS_3D",
    "DIRECTIONS_3D",
    "directional_gru_scan3d",
    "resolve_backend3d",
    "validate_scan3d_inputs",
]
