"""The native CPU line kernel of the fused backend: a line's element-wise work in one pass.

The fused backend (:mod:`spatialrec.ops.fused`) runs each line of a sweep as one GEMM followed by
element-wise work: the gate activations and the new line forward, the gate gradients and the
shifted neighbour gradients backward. Done with torch's element-wise ops this is about ten calls
a line forward and twenty backward, each a full pass over the line's ``(B W, 3S)`` gates and a
few microseconds of dispatch, and at ``S <= 64`` it costs as much as the GEMM itself
(``docs/kernels.md``). ``linestep.cpp``, beside this module, does each side's element-wise work in
one pass over raw buffers; the GEMMs stay torch's.

It is plain C++ with no torch headers and no dependencies, built at first use with the machine's
C++ compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``; about a second) into
``<cache_dir>/native/`` (:func:`spatialrec.options.get_cache_dir`), under a name that hashes the
source, the compiler, its flags and the CPU's instruction-set flags (a cache shared by different
machines keeps one build per kind of machine), and loaded with :mod:`ctypes`. The build is tuned
for the building machine (``-march=native`` and 512-bit vectors where the compiler takes them)
and, where the compiler has OpenMP and the process runs torch's OpenMP runtime alone, splits a
long line's rows over ``torch.get_num_threads()`` threads (:func:`status` says whether).

Whether it is used is the ``cpu_kernel`` option (:func:`spatialrec.options.set_cpu_kernel`,
``SPATIALREC_CPU_KERNEL``): ``auto`` (default) uses it where it builds and torch's ops elsewhere
(no compiler, an unwritable cache and no writable temporary folder, a failed build; the reason
is in :func:`status` and ``spatialrec info``), ``native`` requires it (an error says why it could
not be built), ``torch`` never builds it. Float32 and float64 on the CPU; other dtypes and
devices use torch's ops. The float32 kernel computes ``exp`` with its own vectorisable
polynomial (relative error about one ulp), the float64 one with the C library's ``exp``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import torch

from ... import options

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("linestep.cpp")
"""The kernel's C++ source (shipped with the package)."""

ABI = 2
"""The version the built library must report (``spatialrec_native_abi``); bumped with any change
of the exported functions' signatures."""

_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math")
# Tuned for this machine with 512-bit vectors where it has them (38 instead of 68 us for one
# forward line at B W = 512, S = 32 on an AVX-512 Xeon), tuned, portable.
_ARCH_FLAGS: tuple[tuple[str, ...], ...] = (("-march=native", "-mprefer-vector-width=512"), ("-march=native",), ())
# Tried in turn until one builds: each with OpenMP (the kernel then splits a line's rows over
# torch's threads), then each without. A compiler that rejects a flag (an x86 option on ARM,
# -fopenmp where no OpenMP runtime is installed) moves on to the next; the failure is remembered
# beside the cache (see _build_and_load), so later processes do not retry it.
_FLAG_TIERS: tuple[tuple[str, ...], ...] = tuple(_BASE_FLAGS + ("-fopenmp",) + a for a in _ARCH_FLAGS) + tuple(
    _BASE_FLAGS + a for a in _ARCH_FLAGS
)
_BUILD_TIMEOUT_S = 300

_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
# The last argument of each is the number of threads it may use (torch.get_num_threads()).
_SIGNATURES = {
    "forward_line": (_PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _I64, _I64, _I64, _I64),
    "backward_gates": (_PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64),
    "backward_neighbours": (_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64),
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


_OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")


def _openmp_runtimes() -> Optional[set[str]]:
    """The OpenMP runtime files mapped into this process (Linux's ``/proc/self/maps``), or None
    where that cannot be read."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    return {p for p in paths if os.path.basename(p).startswith(_OPENMP_RUNTIMES)}


def _openmp_off_reason(lib: ctypes.CDLL) -> Optional[str]:
    """Why a loaded build runs on one thread (None: it splits lines over torch's threads).

    An OpenMP build is used on several threads only where it shares torch's OpenMP runtime, i.e.
    one runtime is mapped in the process: torch's Linux CPU wheels load ``libgomp.so.1``, which the
    build then reuses; wheels that ship a renamed copy (CUDA builds) would leave two runtimes, whose
    idle threads spin against each other's work, so the kernel stays on one thread there."""
    if not lib.spatialrec_native_openmp():
        return "built without OpenMP"
    runtimes = _openmp_runtimes()
    if runtimes is None:
        return "cannot tell which OpenMP runtime torch uses (no /proc/self/maps)"
    if len(runtimes) != 1:
        return f"{len(runtimes)} OpenMP runtimes in the process ({', '.join(sorted(runtimes))}), not torch's alone"
    return None


def _parallel(lib: ctypes.CDLL) -> bool:
    return _openmp_off_reason(lib) is None


class LineKernel:
    """The loaded kernel's three functions for one dtype, taking addresses (``linestep.cpp``
    documents each buffer's layout; :mod:`spatialrec.ops.fused`, which owns the buffers, steps
    the addresses and checks contiguity), and :meth:`forward_line` on tensors."""

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype) -> None:
        suffix = _SUFFIX[dtype]
        self.dtype = dtype
        self.itemsize = dtype.itemsize
        # Addresses are ints, None a null pointer: the scan's line loops step them themselves,
        # which saves creating a view per argument and line.
        self.forward_raw = getattr(lib, f"spatialrec_forward_line_{suffix}")
        self.gates_raw = getattr(lib, f"spatialrec_backward_gates_{suffix}")
        self.neighbours_raw = getattr(lib, f"spatialrec_backward_neighbours_{suffix}")
        self.parallel = _parallel(lib)

    def threads(self) -> int:
        """How many threads a call may use: ``torch.get_num_threads()`` where the build splits lines
        over threads (:func:`status`' ``"openmp"`` is ``"yes"``), else 1."""
        return torch.get_num_threads() if self.parallel else 1

    def forward_line(self, g: torch.Tensor, ghn: torch.Tensor, keep: Optional[torch.Tensor], keep_b: int, h: Optional[torch.Tensor], h_b: int, a: Optional[torch.Tensor], b: int, w: int, s: int, threads: Optional[int] = None) -> None:
        """:attr:`forward_raw` on tensors (``None``: a null pointer). ``g (M, 3S)``:
        pre-activations in, gates ``[n | r | z]`` out; with ``h`` (row stride ``h_b`` per batch
        item) the new line ``lerp(keep, n, z)``; with ``a`` the next line's neighbour vectors
        ``(B, W, 3S)``. ``threads``: at most this many (default :meth:`threads`)."""
        nt = self.threads() if threads is None else threads
        self.forward_raw(_ptr(g), _ptr(ghn), _ptr(keep), keep_b, _ptr(h), h_b, _ptr(a), b, w, s, nt)


_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_kernels: dict[torch.dtype, LineKernel] = {}
_failure: Optional[str] = None  # why the build or load failed (not retried in this process)
_built_at: Optional[Path] = None


def _compiler() -> Optional[list[str]]:
    """The C++ compiler's command: ``$CXX`` (may carry flags; :func:`spatialrec.options.cxx_command`),
    else the first of c++, g++, clang++ on the path."""
    cxx = options.cxx_command()
    if cxx:
        return cxx
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (Linux), else what the platform says about the processor."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _build_key(cxx: list[str]) -> "hashlib._Hash":
    """A hash of what every build of this process shares: source, compiler, machine, CPU flags."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(cxx).encode(), platform.machine().encode(), _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    return key


def _library_name(key: "hashlib._Hash", flags: tuple[str, ...]) -> str:
    """The library's file name: ``key`` (:func:`_build_key`) with the flags added."""
    key = key.copy()
    key.update(" ".join(flags).encode())
    suffix = ".dll" if os.name == "nt" else ".so"
    return f"linestep-{key.hexdigest()[:16]}{suffix}"


def _build_folder() -> Path:
    """``<cache_dir>/native``, else (not writable) a folder of this user's in the temporary folder."""
    for folder in (options.get_cache_dir() / "native", Path(tempfile.gettempdir()) / f"spatialrec-native-{os.getuid() if hasattr(os, 'getuid') else 'user'}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder, delete=True)
            probe.close()
            return folder
        except OSError:
            continue
    raise OSError(f"neither {options.get_cache_dir() / 'native'} nor the temporary folder is writable")


def _compile(cxx: list[str], flags: tuple[str, ...], target: Path) -> None:
    """Compile SOURCE into ``target`` (written under a temporary name, then renamed: concurrent
    builds of several processes each produce a whole file)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem + "-", suffix=target.suffix)
    os.close(fd)
    try:
        cmd = [*cxx, *flags, "-o", tmp, str(SOURCE)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    abi = lib.spatialrec_native_abi
    abi.restype = ctypes.c_int
    if abi() != ABI:
        raise RuntimeError(f"{path} reports ABI {abi()}, expected {ABI}")
    lib.spatialrec_native_openmp.restype = ctypes.c_int
    for suffix in _SUFFIX.values():
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, f"spatialrec_{name}_{suffix}")
            fn.argtypes = argtypes
            fn.restype = None
    return lib


def _remember_failure(marker: Path, exc: BaseException) -> None:
    """Write why a tier failed to compile (best effort: an unwritable folder only means a retry)."""
    try:
        marker.write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
    except OSError:
        pass


def _build_and_load() -> ctypes.CDLL:
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    folder = _build_folder()
    key = _build_key(cxx)
    errors = []
    for flags in _FLAG_TIERS:
        target = folder / _library_name(key, flags)
        # A compile that failed once fails again (same source, compiler, flags and machine: the
        # name hashes them): its error is kept beside the cache and the tier skipped. Delete the
        # folder to retry (e.g. after installing an OpenMP runtime).
        failed = target.with_name(target.name + ".failed")
        try:
            if not target.exists():
                if failed.exists():
                    errors.append(f"{' '.join(flags)}: failed before ({failed})")
                    continue
                start = time.perf_counter()
                try:
                    _compile(cxx, flags, target)
                except RuntimeError as exc:  # the compiler refused (a timeout is not remembered)
                    _remember_failure(failed, exc)
                    raise
                logger.info("built the native CPU line kernel in %.1f s: %s", time.perf_counter() - start, target)
            global _built_at
            lib = _load(target)
            _built_at = target
            return lib
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
    raise RuntimeError("; ".join(errors))


def _library_or_reason() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _build_and_load()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _failure = f"{type(exc).__name__}: {exc}"
                logger.info("the native CPU line kernel is not available, torch's ops run instead: %s", _failure)
    return _library, _failure


def line_kernel(dtype: torch.dtype, device: torch.device) -> Optional[LineKernel]:
    """The native line kernel for ``dtype`` on ``device``, or None where torch's ops run instead.

    None for other devices than the CPU, other dtypes than float32 and float64, the
    ``cpu_kernel`` option at ``torch``, or at ``auto`` when the kernel could not be built (see
    :func:`status`). The first call in a process builds (or finds) and loads the library.

    Raises:
        RuntimeError: the option is ``native`` and the kernel could not be built or loaded.
    """
    mode = options.get_cpu_kernel()
    if mode == "torch" or device.type != "cpu" or dtype not in _SUFFIX:
        return None
    kernel = _kernels.get(dtype)
    if kernel is not None:
        return kernel
    lib, reason = _library_or_reason()
    if lib is None:
        if mode == "native":
            raise RuntimeError(f"cpu_kernel='native' but the native CPU line kernel could not be built: {reason}")
        return None
    kernel = _kernels.setdefault(dtype, LineKernel(lib, dtype))
    return kernel


def status() -> dict[str, Optional[str]]:
    """Whether the native kernel is in use, without building it: ``{"option": ..., "state":
    "loaded" | "failed" | "not built yet", "library": path or None, "openmp": "yes" (the loaded
    build splits a line over torch's threads) or "no: <why it runs on one thread>" or None,
    "reason": why it failed or None}``."""
    state = "loaded" if _library is not None else "failed" if _failure is not None else "not built yet"
    off = _openmp_off_reason(_library) if _library is not None else None
    openmp = None if _library is None else "yes" if off is None else f"no: {off}"
    return {"option": options.get_cpu_kernel(), "state": state, "library": str(_built_at) if _built_at else None, "openmp": openmp, "reason": _failure}


def build() -> Path:
    """Build (or find) and load the kernel now, whatever the option says; returns the library's
    path. For a check at start-up, or ``spatialrec info --build-native``.

    Raises:
        RuntimeError: it could not be built or loaded (the reason says why).
    """
    lib, reason = _library_or_reason()
    if lib is None or _built_at is None:
        raise RuntimeError(f"the native CPU line kernel could not be built: {reason}")
    return _built_at


def _forget() -> None:
    """Forget the loaded library and any failure (tests; the next use builds or loads again)."""
    global _library, _failure, _built_at
    with _lock:
        _library, _failure, _built_at = None, None, None
        _kernels.clear()


__all__ = ["ABI", "SOURCE", "LineKernel", "build", "line_kernel", "status"]
