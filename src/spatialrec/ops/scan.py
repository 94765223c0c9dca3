"""The scan op: validation, backend choice and dispatch, for 2D and 3D alike.

:func:`directional_gru_scan` and :func:`directional_gru_scan_sequence` take ``(B, S, H, W)`` or
``(B, S, D, H, W)`` states; the number of spatial dimensions is read from the tensor and, with
the backend name (see :mod:`spatialrec.ops`), selects the kernel: the reference scan for both,
:mod:`~spatialrec.ops.fused` (2D) or :mod:`~spatialrec.ops.fused3d` (3D), whose algorithms
differ, or the Triton kernels for both. When ``"auto"`` chose ``"triton"`` and compiling or
launching a Triton kernel fails, it warns once per device and runs ``"fused"`` on that device
from then on (:func:`_run_triton_or_fallback`; :func:`spatialrec.options.triton_fallback` lists
those devices); an explicit ``backend="triton"`` raises instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from collections.abc import Sequence
from typing import Callable, Optional

import torch

from .. import options
from .directions import DirectionLike, normalize_direction, normalize_directions
from .fused import fused_directional_gru_scan, fused_directional_gru_scan_sequence
from .fused3d import fused_directional_gru_scan3d
from .gates import check_carry
from .reference import reference_directional_gru_scan
from .validation import check_scan_inputs

BACKENDS: tuple[str, ...] = ("reference", "fused", "triton")
"""The backends :func:`directional_gru_scan` knows, plus ``"auto"``."""

BACKEND_ENV_VAR = options.ENV_VARS["backend"]
"""The environment variable the ``backend`` option (:mod:`spatialrec.options`) defaults from."""

ScanFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str, str], torch.Tensor]
ScanParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# (backend, spatial dims) -> kernel. Triton is looked up on first use (see _kernel).
_KERNELS: dict[tuple[str, int], ScanFn] = {
    ("reference", 2): reference_directional_gru_scan,
    ("reference", 3): reference_directional_gru_scan,
    ("fused", 2): fused_directional_gru_scan,
    ("fused", 3): fused_directional_gru_scan3d,
}


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton is importable here (the ``triton`` backend also needs CUDA tensors, or the
    Triton interpreter, ``TRITON_INTERPRET=1``, for tests)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def available_backends() -> tuple[str, ...]:
    """The concrete backends usable in this installation, e.g. ``("reference", "fused", "triton")``."""
    return BACKENDS if triton_available() else BACKENDS[:2]


def resolve_backend(backend: str, x: Optional[torch.Tensor] = None) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into the backend that runs for tensor ``x``.

    ``"auto"`` takes the ``backend`` option first (:func:`spatialrec.options.set_backend`, default
    from ``SPATIALREC_BACKEND``); left at ``"auto"``: ``"triton"`` when ``x`` is a CUDA tensor
    (:func:`triton_device`), Triton is importable and no Triton kernel has failed on ``x``'s device
    (:func:`spatialrec.options.triton_fallback`), else ``"fused"``. Without ``x`` only the name is
    checked and resolved.

    Raises:
        TypeError: ``backend`` is not a string.
        ValueError: ``backend`` (or the option's environment variable) names no known backend.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name == "auto":
        chosen = options.get_backend()
        if chosen != "auto":
            name = chosen
        else:
            usable = x is not None and triton_device(x) and triton_available() and str(x.device) not in options.triton_fallback()
            name = "triton" if usable else "fused"
    elif name not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not a backend; expected one of {BACKENDS} or 'auto'")
    return name


def triton_device(x: torch.Tensor) -> bool:
    """Whether ``"auto"`` may run Triton kernels on ``x``'s device: CUDA only, never the
    interpreter (tests replace this function to send CPU tensors to a stand-in kernel)."""
    return x.is_cuda


_log = logging.getLogger(__name__)


def _auto_without_override(backend: str) -> bool:
    """Whether ``backend`` is ``"auto"`` left to choose by itself (the ``backend`` option at
    ``"auto"``): only then may a failing Triton kernel fall back; a named backend is the caller's
    decision."""
    return backend.strip().lower() == "auto" and options.get_backend() == "auto"


def _is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says the device ran out of memory: a property of this call's sizes, not of
    the Triton toolchain, so it must reach the caller (who may retry with a smaller batch)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError on torch >= 2.5, the same class
        return True
    # Driver and allocator errors that Triton or torch raise as plain RuntimeErrors.
    message = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def _run_triton_or_fallback(fn: ScanFn, fallback: ScanFn, args: tuple) -> torch.Tensor:
    """Run a Triton kernel that ``"auto"`` chose; if it fails to compile or launch, mark the
    device (:func:`spatialrec.options.mark_triton_fallback`), warn once for that device and run
    ``fallback`` (the ``fused`` kernel) on it instead.

    Input errors (``ValueError``, ``TypeError``) and out-of-memory errors are not Triton failures
    and propagate, leaving the device on Triton. A failure in the backward pass cannot be caught
    here; the Triton function therefore compiles its backward kernels during the forward (see
    :mod:`spatialrec.ops.triton`).
    """
    try:
        return fn(*args)
    except (ValueError, TypeError):
        raise
    except Exception as err:  # noqa: BLE001 - any compiler/driver error; re-raised by backend="triton"
        if _is_out_of_memory(err):
            raise
        device = args[0].device
        reason = f"{type(err).__name__}: {err}"
        if options.mark_triton_fallback(device, reason):
            warnings.warn(
                f"spatialrec: the Triton scan kernel failed on {device} ({reason}); backend='auto' falls back "
                f"to backend='fused' on {device} for the rest of this process (pass backend='triton' to get the "
                "error; spatialrec.options.reset_triton_fallback() to try Triton again)",
                RuntimeWarning,
                stacklevel=4,
            )
            _log.warning("Triton scan failed on %s, falling back to fused: %s", device, reason)
        return fallback(*args)


def _kernel(name: str, spatial_dims: int) -> ScanFn:
    if name == "triton":
        try:
            module = importlib.import_module("spatialrec.ops.triton")
        except ImportError as err:
            raise ImportError(f"backend 'triton' is not available: {err} (pip install 'spatialrec[triton]')") from err
        fn: ScanFn = module.triton_directional_gru_scan
        return fn
    return _KERNELS[name, spatial_dims]


def directional_gru_scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: DirectionLike,
    backend: str = "auto",
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep a state map (2D) or volume (3D) with a gated recurrent unit, line by line, in one direction.

    For ``direction="down"`` on ``(B, S, H, W)``, row ``i`` (``i >= 1``) of the output is computed
    from the already swept row ``i - 1`` (its three neighbours ``j-1, j, j+1`` per column, zero
    outside the image) and from row ``i`` of the input (the prior), with the GRU gate equations
    of docs/maths.md; row 0 is returned unchanged. The other directions are the same sweep along
    another axis or sense. On ``(B, S, D, H, W)`` the lines are planes and each position reads
    the 3x3 neighbourhood of the previous plane (normative order: :mod:`spatialrec.ops.directions`).

    Args:
        x: ``(B, S, H, W)`` or ``(B, S, D, H, W)`` prior states, floating point (float32,
            float64, bfloat16, float16).
        weight_ih: ``(3S, 3S)`` in 2D, ``(3S, 9S)`` in 3D: weights of the neighbour term.
        weight_hh: ``(3S, S)`` weights of the prior term.
        bias_ih, bias_hh: ``(3S,)`` biases.
        direction: ``"right"``, ``"left"``, ``"down"``, ``"up"`` (and in 3D ``"in"``, ``"out"``
            along depth), or the codes 0-3 (0-5 in 3D).
        backend: ``"auto"`` (default), ``"reference"``, ``"fused"`` or ``"triton"``.
        carry: what the update gate's ``(1 - z)`` term keeps (:data:`~spatialrec.ops.gates.CARRIES`):
            ``"prior"`` (default here: the published cell, ``z n + (1 - z) p``) or ``"line"``
            (the previous line's state at the same position, ``z n + (1 - z) h_{i-1}``).

    Returns:
        Swept states of the shape and dtype of ``x``. Gates are computed in float32 (float64 for
        float64 inputs), also under ``torch.autocast``.

    Example:
        >>> S = 8
        >>> w_ih, w_hh = torch.randn(3 * S, 3 * S), torch.randn(3 * S, S)
        >>> b_ih, b_hh = torch.zeros(3 * S), torch.zeros(3 * S)
        >>> directional_gru_scan(torch.randn(2, S, 5, 7), w_ih, w_hh, b_ih, b_hh, "down").shape
        torch.Size([2, 8, 5, 7])
        >>> w_ih3 = torch.randn(3 * S, 9 * S)
        >>> directional_gru_scan(torch.randn(1, S, 4, 5, 6), w_ih3, w_hh, b_ih, b_hh, "in").shape
        torch.Size([1, 8, 4, 5, 6])
    """
    dims = check_scan_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh)
    name = normalize_direction(direction, dims)
    check_carry(carry)
    resolved = resolve_backend(backend, x)
    fn = _kernel(resolved, dims)
    args = (x, weight_ih, weight_hh, bias_ih, bias_hh, name, carry)
    # The gate precision is the op's business, not autocast's: run the backend outside autocast.
    with torch.autocast(device_type=x.device.type, enabled=False):
        if resolved == "triton" and _auto_without_override(backend):
            return _run_triton_or_fallback(fn, _kernel("fused", dims), args)
        return fn(*args)


def directional_gru_scan_sequence(
    x: torch.Tensor,
    params: Sequence[ScanParams],
    directions: Sequence[DirectionLike],
    backend: str = "auto",
    carry: str = "prior",
) -> torch.Tensor:
    """Sweep ``x`` in each of ``directions`` in turn, each sweep reading the previous one's output.

    The same as ``for (w_ih, w_hh, b_ih, b_hh), d in zip(params, directions): x =
    directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, d, backend)``, which is what every backend
    but the 2D ``fused`` one does. That one runs all sweeps in one chain of autograd functions:
    the lines stay in its line-major layout from one sweep to the next (no transposing copies in
    between) and the intermediate outputs are not kept for the backward.

    Args:
        x: ``(B, S, H, W)`` or ``(B, S, D, H, W)`` prior states, floating point.
        params: one ``(weight_ih, weight_hh, bias_ih, bias_hh)`` tuple per direction.
        directions: non-empty ordered sequence of directions (names or codes).
        backend: ``"auto"`` (default), ``"reference"``, ``"fused"`` or ``"triton"``.
        carry: the cell of every sweep, ``"prior"`` (default, published) or ``"line"``, see
            :func:`directional_gru_scan`.

    Returns:
        States of the shape and dtype of ``x`` (the 2D ``fused`` backend returns channels-last
        strides).

    Raises:
        TypeError, ValueError: malformed ``x``, ``params`` or ``directions`` (the message names
            the argument), or ``len(params) != len(directions)``.
    """
    # x itself is checked with each parameter tuple below; its rank only selects the direction set here.
    dims = x.dim() - 2 if isinstance(x, torch.Tensor) and x.dim() in (4, 5) else 2
    names = normalize_directions(directions, dims)
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence):
        raise TypeError(f"params must be a sequence of (weight_ih, weight_hh, bias_ih, bias_hh) tuples, got {type(params).__name__}")
    if len(params) != len(names):
        raise ValueError(f"params has {len(params)} entries but directions has {len(names)}; give one parameter tuple per direction")
    for k, p in enumerate(params):
        if isinstance(p, torch.Tensor) or not isinstance(p, Sequence) or len(p) != 4:
            raise TypeError(f"params[{k}] must be a tuple (weight_ih, weight_hh, bias_ih, bias_hh), got {type(p).__name__}")
        check_scan_inputs(x, *p)
    check_carry(carry)
    name = resolve_backend(backend, x)
    if name == "fused" and dims == 2:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return fused_directional_gru_scan_sequence(x, [(p[0], p[1], p[2], p[3]) for p in params], names, carry)
    for p, d in zip(params, names):
        # "auto" stays "auto" for Triton, so that each sweep keeps its fallback.
        x = directional_gru_scan(x, *p, d, backend=backend if name == "triton" else name, carry=carry)
    return x


def directional_gru_scan3d(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    direction: DirectionLike,
    backend: str = "auto",
    carry: str = "prior",
) -> torch.Tensor:
    """:func:`directional_gru_scan` restricted to volumes ``x: (B, S, D, H, W)`` (kept for code
    written against the former 3D op; new code calls :func:`directional_gru_scan`)."""
    if isinstance(x, torch.Tensor) and x.dim() != 5:
        raise ValueError(f"x must have shape (B, S, D, H, W) (5 dims), got shape {tuple(x.shape)}")
    return directional_gru_scan(x, weight_ih, weight_hh, bias_ih, bias_hh, direction, backend, carry)


__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "available_backends",
    "directional_gru_scan",
    "directional_gru_scan3d",
    "directional_gru_scan_sequence",
    "resolve_backend",
    "triton_available",
    "triton_device",
]
