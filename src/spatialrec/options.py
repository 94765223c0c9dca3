"""Process-wide options: the scan backend, the fused kernel's gate memory and CPU line kernel,
Triton's float32 precision, the cache folder; and which devices the Triton backend fell back from.

Each option has a typed getter and setter, and :func:`override` changes any of them for a
block. An option not set here takes its default from an environment variable, read once, when
this module is imported (:func:`reset` reads it again):

=====================  ===============================  ========================================
option                 environment variable             values (default first)
=====================  ===============================  ========================================
``backend``            ``SPATIALREC_BACKEND``           ``auto``, ``reference``, ``fused``, ``triton``
``fused_gates``        ``SPATIALREC_FUSED_GATES``       ``save``, ``recompute``
``cpu_kernel``         ``SPATIALREC_CPU_KERNEL``        ``auto``, ``native``, ``torch``
``triton_precision``   ``SPATIALREC_TRITON_PRECISION``  ``auto``, ``ieee``, ``tf32``
``cache_dir``          ``SPATIALREC_CACHE``             a folder; ``~/.cache/spatialrec``
=====================  ===============================  ========================================

``backend`` is what ``backend="auto"`` resolves to when it is not ``auto``; an explicit
``backend=`` argument of a layer or op wins over it. ``triton_precision="auto"`` follows
:func:`torch.get_float32_matmul_precision`: ``"highest"`` -> ``ieee`` (exact float32 products),
``"high"`` or ``"medium"`` -> ``tf32`` (TF32 tensor cores). ``cpu_kernel`` picks how the fused
backend does a line's element-wise work on the CPU (:mod:`spatialrec.ops.native`): ``native``,
the library's small C++ line kernel, built with the machine's compiler at first use (an error
when it cannot be built), ``torch``, torch's element-wise ops, or ``auto``, native where it
builds and torch's ops elsewhere.

Variables that belong to other tools are read here too, at each call, never set:
Triton's ``TRITON_INTERPRET`` (:func:`triton_interpret`), the build tools' ``CXX``
(:func:`cxx_command`) and the launcher's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``
(:func:`launcher_int`). No other module of the package reads the environment.

Threads: the options are one set for the whole process, like torch's own global flags; a
setter or :func:`override` in one thread changes them for every thread while it is in effect.
Set them at start-up, or override them where one thread runs. Getters take no lock (they may run
inside ``torch.compile``), setters do.

Example:
    >>> from spatialrec import options
    >>> with options.override(backend="reference", fused_gates="recompute"):
    ...     options.get_backend(), options.get_fused_gates()
    ('reference', 'recompute')
    >>> options.get_backend() in ("auto", "reference", "fused", "triton")
    True
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Optional, TypeVar, Union

import torch

BACKEND_CHOICES: tuple[str, ...] = ("auto", "reference", "fused", "triton")
"""Values of the ``backend`` option (``auto``: Triton on CUDA tensors when it is usable, else fused)."""

FUSED_GATES_CHOICES: tuple[str, ...] = ("save", "recompute")
"""Values of the ``fused_gates`` option: what a fused training forward keeps for the backward, the
gate activations (``save``, ``3S`` values per position and sweep) or only the states
(``recompute``: one more GEMM per line in the backward)."""

CPU_KERNEL_CHOICES: tuple[str, ...] = ("auto", "native", "torch")
"""Values of the ``cpu_kernel`` option: how the fused backend does a line's element-wise work on
the CPU (``auto``: the native line kernel where it builds, else torch's ops; see
:mod:`spatialrec.ops.native`)."""

TRITON_PRECISION_CHOICES: tuple[str, ...] = ("auto", "ieee", "tf32")
"""Values of the ``triton_precision`` option (the ``tl.dot`` mode of float32 inputs)."""

ENV_VARS: dict[str, str] = {
    "backend": "SPATIALREC_BACKEND",
    "fused_gates": "SPATIALREC_FUSED_GATES",
    "cpu_kernel": "SPATIALREC_CPU_KERNEL",
    "triton_precision": "SPATIALREC_TRITON_PRECISION",
    "cache_dir": "SPATIALREC_CACHE",
}
"""The environment variable each option takes its default from."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "backend": BACKEND_CHOICES,
    "fused_gates": FUSED_GATES_CHOICES,
    "cpu_kernel": CPU_KERNEL_CHOICES,
    "triton_precision": TRITON_PRECISION_CHOICES,
}
_MATMUL_TO_TRITON = {"highest": "ieee", "high": "tf32", "medium": "tf32"}

_lock = threading.Lock()
_values: dict[str, Union[str, Path]] = {}  # set by a setter or override()
_environment: dict[str, str] = {}  # the variables of ENV_VARS, as read at import or by reset()
# device -> why "auto" runs fused there; not retried by itself (a failed compile is slow and would
# fail again), only after reset_triton_fallback().
_triton_fallback: dict[str, str] = {}


_T = TypeVar("_T")


def _put(mapping: MutableMapping[str, _T], key: str, value: Optional[_T]) -> None:
    """``mapping[key] = value``, or remove ``key`` (if there) when ``value`` is None."""
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _read_environment(names: tuple[str, ...]) -> None:
    for name in names:
        raw = os.environ.get(ENV_VARS[name], "")
        _put(_environment, name, raw if raw.strip() else None)


_read_environment(tuple(ENV_VARS))


def _check_choice(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    choice = value.strip().lower()
    if choice not in _CHOICES[name]:
        raise ValueError(f"{name}={value!r} is not an option value; expected one of {_CHOICES[name]}")
    return choice


def _check_folder(name: str, value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike folder, got {type(value).__name__} {value!r}")
    if not str(value).strip():
        raise ValueError(f"{name}={value!r} is empty; expected a folder")
    return Path(value)


def _choice(name: str) -> str:
    """The set value of choice option ``name``, else its variable's (checked here, so that a bad
    variable fails where it is used, naming the variable), else its first choice."""
    value = _values.get(name)
    if value is not None:
        return str(value)
    raw = _environment.get(name)
    if raw is None:
        return _CHOICES[name][0]
    choice = raw.strip().lower()
    if choice not in _CHOICES[name]:
        raise ValueError(f"{ENV_VARS[name]}={choice!r} is not a {name} value; expected one of {_CHOICES[name]}")
    return choice


def _set(name: str, value: Union[str, Path]) -> None:
    with _lock:
        _values[name] = value


def get_backend() -> str:
    """What ``backend="auto"`` resolves to (``"auto"``: chosen per tensor; see :func:`spatialrec.ops.resolve_backend`).

    Raises:
        ValueError: not set, and ``SPATIALREC_BACKEND`` names no backend.
    """
    return _choice("backend")


def set_backend(backend: str) -> None:
    """Make ``backend="auto"`` run ``backend`` (``"auto"`` restores the per-tensor choice).

    Raises:
        TypeError: ``backend`` is not a str.
        ValueError: ``backend`` is not one of :data:`BACKEND_CHOICES`.
    """
    _set("backend", _check_choice("backend", backend))


def get_fused_gates() -> str:
    """``"save"`` or ``"recompute"``: what a fused training forward keeps for the backward.

    Raises:
        ValueError: not set, and ``SPATIALREC_FUSED_GATES`` is neither ``save`` nor ``recompute``.
    """
    return _choice("fused_gates")


def set_fused_gates(mode: str) -> None:
    """Set the fused kernel's gate memory mode, one of :data:`FUSED_GATES_CHOICES`.

    Raises:
        TypeError: ``mode`` is not a str.
        ValueError: ``mode`` is not ``"save"`` or ``"recompute"``.
    """
    _set("fused_gates", _check_choice("fused_gates", mode))


def get_cpu_kernel() -> str:
    """``"auto"``, ``"native"`` or ``"torch"``: how the fused backend does a line's element-wise
    work on the CPU (see :mod:`spatialrec.ops.native`).

    Raises:
        ValueError: not set, and ``SPATIALREC_CPU_KERNEL`` is not ``auto``/``native``/``torch``.
    """
    return _choice("cpu_kernel")


def set_cpu_kernel(kernel: str) -> None:
    """Set the fused backend's CPU line kernel, one of :data:`CPU_KERNEL_CHOICES`.

    Raises:
        TypeError: ``kernel`` is not a str.
        ValueError: ``kernel`` is not ``"auto"``, ``"native"`` or ``"torch"``.
    """
    _set("cpu_kernel", _check_choice("cpu_kernel", kernel))


def get_triton_precision() -> str:
    """The ``tl.dot`` precision of float32 inputs in the Triton kernels: ``"ieee"`` or ``"tf32"``.

    With the option at ``"auto"`` (default) it follows :func:`torch.get_float32_matmul_precision`
    at the time of the call: ``"highest"`` -> ``"ieee"``, ``"high"``/``"medium"`` -> ``"tf32"``.

    Raises:
        ValueError: not set, and ``SPATIALREC_TRITON_PRECISION`` is not ``auto``/``ieee``/``tf32``.
    """
    mode = _choice("triton_precision")
    if mode == "auto":
        return _MATMUL_TO_TRITON.get(torch.get_float32_matmul_precision(), "ieee")
    return mode


def set_triton_precision(precision: str) -> None:
    """Set the Triton float32 precision: ``"ieee"``, ``"tf32"`` or ``"auto"`` (follow torch's
    float32 matmul precision, see :func:`get_triton_precision`).

    Raises:
        TypeError: ``precision`` is not a str.
        ValueError: ``precision`` is not one of :data:`TRITON_PRECISION_CHOICES`.
    """
    _set("triton_precision", _check_choice("triton_precision", precision))


def get_cache_dir() -> Path:
    """The folder the data readers cache preprocessed data in and the native CPU line kernel is
    built in (each under its own sub-folder):
    the set folder, else ``$SPATIALREC_CACHE``, else ``~/.cache/spatialrec``."""
    value = _values.get("cache_dir")
    if value is not None:
        return Path(value)
    raw = _environment.get("cache_dir")
    return Path(raw) if raw is not None else Path.home() / ".cache" / "spatialrec"


def set_cache_dir(folder: Union[str, "os.PathLike[str]"]) -> None:
    """Set the cache folder (not created here; the readers create it on first use).

    Raises:
        TypeError: ``folder`` is not a str or path.
        ValueError: ``folder`` is empty.
    """
    _set("cache_dir", _check_folder("cache_dir", folder))


def reset(*names: str) -> None:
    """Forget the values set for ``names`` (every option when none is given) and read their
    environment variables again: they are back to their defaults.

    Raises:
        ValueError: a name is not an option (the options are the keys of :data:`ENV_VARS`).
    """
    for name in names:
        if name not in ENV_VARS:
            raise ValueError(f"reset got {name!r}, which is not an option; expected one of {tuple(ENV_VARS)}")
    chosen = names or tuple(ENV_VARS)
    with _lock:
        for name in chosen:
            _values.pop(name, None)
        _read_environment(chosen)


@contextlib.contextmanager
def override(
    *,
    backend: Optional[str] = None,
    fused_gates: Optional[str] = None,
    cpu_kernel: Optional[str] = None,
    triton_precision: Optional[str] = None,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
) -> Iterator[None]:
    """Set the given options (``None``: left as they are) for the ``with`` block, then restore
    what was set before, also when the block raises. Blocks nest. All values are checked before
    any is changed.

    Raises:
        TypeError, ValueError: as the setters.

    Example:
        >>> from spatialrec import options
        >>> with options.override(fused_gates="recompute"):
        ...     with options.override(fused_gates="save"):
        ...         inner = options.get_fused_gates()
        ...     outer = options.get_fused_gates()
        >>> inner, outer
        ('save', 'recompute')
    """
    new: dict[str, Union[str, Path]] = {}
    for name, value in (("backend", backend), ("fused_gates", fused_gates), ("cpu_kernel", cpu_kernel), ("triton_precision", triton_precision)):
        if value is not None:
            new[name] = _check_choice(name, value)
    if cache_dir is not None:
        new["cache_dir"] = _check_folder("cache_dir", cache_dir)
    with _lock:
        saved = {name: _values.get(name) for name in new}
        _values.update(new)
    try:
        yield
    finally:
        with _lock:
            for name, old in saved.items():
                _put(_values, name, old)


def triton_interpret() -> bool:
    """Whether Triton runs kernels in its CPU interpreter: Triton's own ``TRITON_INTERPRET=1``,
    read here (not set; Triton reads it itself) at each call, as Triton does."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cxx_command() -> list[str]:
    """The C++ compiler command the build tools' ``CXX`` names (it may carry flags), split into
    words; empty when unset. Read at each call (:mod:`spatialrec.ops.native` builds with it)."""
    return os.environ.get("CXX", "").split()


LAUNCHER_VARS: tuple[str, ...] = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
"""The variables a launcher (``torchrun``) sets for each process, which
:func:`spatialrec.train.distributed.setup` reads through :func:`launcher_int`."""


def launcher_int(name: str, default: int) -> int:
    """The integer the launcher's variable ``name`` (one of :data:`LAUNCHER_VARS`) holds, or
    ``default`` when it is unset or empty. Read at each call.

    Raises:
        ValueError: ``name`` is not a launcher variable, or its value is not an integer.
    """
    if name not in LAUNCHER_VARS:
        raise ValueError(f"launcher_int got {name!r}; expected one of {LAUNCHER_VARS}")
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


@contextlib.contextmanager
def scoped_environ(**variables: Optional[str]) -> Iterator[None]:
    """Set (a str) or unset (``None``) environment variables for the ``with`` block and restore
    them after, also when it raises.

    For handing a variable to a library that reads it itself (Triton reads ``TRITON_INTERPRET``
    when it is imported). The environment is the process's: other threads see the change.

    Raises:
        TypeError: a value is neither a str nor ``None``.
    """
    for key, value in variables.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must be a str or None, got {type(value).__name__} {value!r}")
    saved = {key: os.environ.get(key) for key in variables}
    try:
        for key, value in variables.items():
            _put(os.environ, key, value)
        yield
    finally:
        for key, old in saved.items():
            _put(os.environ, key, old)


def _device_key(device: Union[str, torch.device]) -> str:
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__} {device!r}")
    return str(torch.device(device))


def triton_fallback() -> dict[str, str]:
    """The devices on which ``backend="auto"`` runs ``fused`` instead of ``triton`` because a
    Triton kernel failed to compile or launch there: ``{"cuda:0": "OutOfResources: ..."}``
    (a copy; empty when Triton never failed)."""
    return dict(_triton_fallback)


def mark_triton_fallback(device: Union[str, torch.device], reason: str) -> bool:
    """Make ``backend="auto"`` run ``fused`` on ``device`` from now on, recording ``reason``.

    The scan calls it when a Triton kernel fails; it can also keep Triton off one device by hand.
    Returns whether the device was newly marked (the first failure is kept).

    Raises:
        TypeError: ``device`` is not a str or ``torch.device``, or ``reason`` not a str.
    """
    key = _device_key(device)
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str, got {type(reason).__name__}")
    with _lock:
        if key in _triton_fallback:
            return False
        _triton_fallback[key] = reason
        return True


def reset_triton_fallback(device: Union[str, torch.device, None] = None) -> None:
    """Let ``backend="auto"`` try Triton again on ``device`` (every device when ``None``; a device
    type without index, e.g. ``"cuda"``, means every device of that type).

    Raises:
        TypeError: ``device`` is not a str, ``torch.device`` or ``None``.
    """
    with _lock:
        if device is None:
            _triton_fallback.clear()
            return
        key = _device_key(device)
        d = torch.device(key)
        for k in list(_triton_fallback):
            if k == key or (d.index is None and torch.device(k).type == d.type):
                del _triton_fallback[k]


__all__ = [
    "BACKEND_CHOICES",
    "CPU_KERNEL_CHOICES",
    "ENV_VARS",
    "LAUNCHER_VARS",
    "FUSED_GATES_CHOICES",
    "TRITON_PRECISION_CHOICES",
    "cxx_command",
    "get_backend",
    "get_cache_dir",
    "get_cpu_kernel",
    "get_fused_gates",
    "get_triton_precision",
    "launcher_int",
    "mark_triton_fallback",
    "override",
    "reset",
    "reset_triton_fallback",
    "scoped_environ",
    "set_backend",
    "set_cache_dir",
    "set_cpu_kernel",
    "set_fused_gates",
    "set_triton_precision",
    "triton_fallback",
    "triton_interpret",
]
