"""Directional GRU traversal kernels: functions on tensors, no modules.

The public entry point is :func:`directional_gru_scan`. It validates its arguments once and
dispatches to a backend:

- ``"reference"``: :mod:`spatialrec.ops.reference`, readable, differentiated by autograd; the
  ground truth for the others.
- ``"fused"``: :mod:`spatialrec.ops.fused`, a custom autograd function (CPU and CUDA).
- ``"triton"``: :mod:`spatialrec.ops.triton`, GPU kernels (imported lazily).
- ``"auto"``: the environment variable ``SPATIALREC_BACKEND`` when set, else triton for CUDA
  tensors when Triton is importable, else fused.

Every backend takes the same arguments, sweeps the `down` direction of a view of the input
(:mod:`spatialrec.ops.directions`), computes the gates in at least float32, and returns a
tensor of the input's shape and dtype.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, Optional, Sequence

import torch

from .directions import (
    DIRECTIONS,
    DirectionLike,
    from_down_view,
    normalize_direction,
    normalize_directions,
    to_down_view,
)
from .reference import reference_directional_gru_scan
from .validation import check_scan_inputs

BACKENDS: tuple[str, ...] = ("reference", "fused", "triton")
"""The backends :func:`directional_gru_scan` knows, plus ``"auto"``."""

BACKEND_ENV_VAR = "SPATIALREC_BACKEND"

ScanFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]

# module, function name: imported on first use so that importing spatialrec never needs Triton.
_BACKEND_IMPLS: dict[str, tuple[str, str]] = {
    "reference": ("spatialrec.ops.reference", "reference_directional_gru_scan"),
    "fused": ("spatialrec.ops.fused", "fused_directional_gru_scan"),
    "triton": ("spatialrec.ops.triton", "triton_directional_gru_scan"),
}


def _backend_fn(name: str) -> ScanFn:
    module, attr = _BACKEND_IMPLS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as err:
        hint = " (install the extra: pip install 'spatialrec[triton]')" if name == "triton" else ""
        raise ImportError(f"backend {name!r} is not available: {err}{hint}") from err


def triton_available() -> bool:
    """Whether the Triton backend can run here (Triton importable)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def available_backends() -> tuple[str, ...]:
    """The concrete backends usable in this installation, e.g. ``("reference", "fused", "triton")``.

    ``"triton"`` is listed when Triton is importable; it still needs CUDA tensors (or the Triton
    interpreter, ``TRITON_INTERPRET=1``, for tests).
    """
    return tuple(name for name in BACKENDS if _module_exists(name) and (name != "triton" or triton_available()))


def _module_exists(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(_BACKEND_IMPLS[name][0]) is not None


def resolve_backend(backend: str, x: Optional[torch.Tensor] = None) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into the concrete backend used for tensor ``x``.

    ``"auto"`` reads ``SPATIALREC_BACKEND`` first; without it: ``"triton"`` when ``x`` is a CUDA
    tensor and Triton is importable, else ``"fused"`` (``"reference"`` if no faster backend is
    installed in this build).

    Raises:
        TypeError: ``backend`` is not a string.
        ValueError: ``backend`` (or the environment variable) names no known backend.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name == "auto":
        env = os.environ.get(BACKEND_ENV_VAR, "").strip().lower()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"{BACKEND_ENV_VAR}={env!r} is not a backend; expected one of {BACKENDS} or 'auto'")
            return env
        if x is not None and x.is_cuda and triton_available() and _module_exists("triton"):
            return "triton"
        return "fused" if _module_exists("fused") else "reference"
    if name not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not a backend; expected one of {BACKENDS} or 'auto'")
    return name


def validate_scan_inputs(
    x: object,
    weight_ih: object,
    weight_hh: object,
    bias_ih: object,
    bias_hh: object,
) -> None:
    """Raise a ``TypeError``/``ValueError`` naming the argument if the scan's inputs are malformed."""
    check_scan_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh, spatial_dims=2)


def directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: DirectionLike,
    backend: str = "auto",
) -> torch.Tensor:
    """Sweep a state map with a gated recurrent unit, line by line, in one direction.

    For ``direction="down"`` row ``i`` (``i >= 1``) of the output is computed from the already
    swept row ``i - 1`` (its three neighbours ``j-1, j, j+1`` per column, zero outside the image)
    and from row ``i`` of the input (the prior), with the GRU gate equations of DESIGN.md; row 0
    is returned unchanged. ``"up"``, ``"right"`` and ``"left"`` are the same sweep along the
    other axis/sense.

    Args:
        x: ``(B, S, H, W)`` prior states, floating point (float32, float64, bfloat16, float16).
        weight_ih: ``(3S, 3S)`` weights of the neighbour term.
        weight_hh: ``(3S, S)`` weights of the prior term.
        bias_ih, bias_hh: ``(3S,)`` biases.
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"`` or the published codes 0-3.
        backend: ``"auto"`` (default), ``"reference"``, ``"fused"`` or ``"triton"``.

    Returns:
        ``(B, S, H, W)`` swept states, dtype of ``x``. Gates are computed in float32 (float64
        for float64 inputs), also under ``torch.autocast``.

    Example:
        >>> S = 8
        >>> x = torch.randn(2, S, 5, 7)
        >>> w_ih, w_hh = torch.randn(3 * S, 3 * S), torch.randn(3 * S, S)
        >>> b_ih, b_hh = torch.zeros(3 * S), torch.zeros(3 * S)
        >>> directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "down").shape
        torch.Size([2, 8, 5, 7])
    """
    validate_scan_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh)
    name = normalize_direction(direction)
    fn = _backend_fn(resolve_backend(backend, x))
    # The gate precision is the op's business, not autocast's: run the backend outside autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        return fn(x, weight_ih, weight_hh, bias_ih, bias_hh, name)


# Backends with a multi-sweep implementation; the others run one sweep after another.
_SEQUENCE_IMPLS: dict[str, tuple[str, str]] = {
    "fused": ("spatialrec.ops.fused", "fused_directional_gru_scan_sequence"),
}

ScanParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def directional_gru_scan_sequence(
    x: torch.Tensor,
    params: Sequence[ScanParams],
    directions: Sequence[DirectionLike],
    backend: str = "auto",
) -> torch.Tensor:
    """Sweep ``x`` in each of ``directions`` in turn, each sweep reading the previous one's output.

    The same as ``for (w_ih, w_hh, b_ih, b_hh), d in zip(params, directions): x =
    directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, d, backend)``, which is what the
    ``reference`` and ``triton`` backends do. The ``fused`` backend runs all sweeps in one
    autograd function: the lines stay in its line-major layout from one sweep to the next (no
    transposing copies in between) and the intermediate outputs are not kept for the backward.

    Args:
        x: ``(B, S, H, W)`` prior states, floating point.
        params: one ``(weight_ih (3S, 3S), weight_hh (3S, S), bias_ih (3S,), bias_hh (3S,))``
            tuple per direction.
        directions: non-empty sequence of directions (names or published codes 0-3).
        backend: ``"auto"`` (default), ``"reference"``, ``"fused"`` or ``"triton"``.

    Returns:
        ``(B, S, H, W)`` in the dtype of ``x`` (the ``fused`` backend returns channels-last
        strides).

    Raises:
        TypeError, ValueError: malformed ``x``, ``params`` or ``directions`` (the message names
            the argument), or ``len(params) != len(directions)``.
    """
    names = normalize_directions(directions)
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence):
        raise TypeError(f"params must be a sequence of (weight_ih, weight_hh, bias_ih, bias_hh) tuples, got {type(params).__name__}")
    if len(params) != len(names):
        raise ValueError(f"params has {len(params)} entries but directions has {len(names)}; give one parameter tuple per direction")
    for k, p in enumerate(params):
        if isinstance(p, torch.Tensor) or not isinstance(p, Sequence) or len(p) != 4:
            raise TypeError(f"params[{k}] must be a tuple (weight_ih, weight_hh, bias_ih, bias_hh), got {type(p).__name__}")
        validate_scan_inputs(x, *p)
    name = resolve_backend(backend, x)
    if name not in _SEQUENCE_IMPLS:
        for p, d in zip(params, names):
            x = directional_gru_scan(x, *p, d, backend=name)
        return x
    module, attr = _SEQUENCE_IMPLS[name]
    fn = getattr(importlib.import_module(module), attr)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return fn(x, [tuple(p) for p in params], names)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "available_backends",
    "DIRECTIONS",
    "directional_gru_scan",
    "directional_gru_scan_sequence",
    "from_down_view",
    "normalize_direction",
    "normalize_directions",
    "reference_directional_gru_scan",
    "resolve_backend",
    "to_down_view",
    "triton_available",
    "validate_scan_inputs",
]

# Volumetric (3D) scan: its own module, same validation style and backend names.
from .directions3d import (  # noqa: E402
    DIRECTIONS_3D,
    from_canonical_view3d,
    normalize_direction3d,
    normalize_directions3d,
    to_canonical_view3d,
)
from .reference3d import reference_directional_gru_scan3d  # noqa: E402
from .scan3d import BACKENDS_3D, directional_gru_scan3d, resolve_backend3d, validate_scan3d_inputs  # noqa: E402

__all__ += [
    "BACKENDS_3D",
    "DIRECTIONS_3D",
    "directional_gru_scan3d",
    "from_canonical_view3d",
    "normalize_direction3d",
    "normalize_directions3d",
    "reference_directional_gru_scan3d",
    "resolve_backend3d",
    "to_canonical_view3d",
    "validate_scan3d_inputs",
]
