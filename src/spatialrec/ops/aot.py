"""Ahead-of-time compilation of the Triton scan kernels for real NVIDIA targets, without a GPU.

The Triton backend (:mod:`spatialrec.ops.triton`) is only ever *run* on this project's CI in the
Triton interpreter, which checks the maths but not the code a GPU would execute. This module
compiles every kernel, for every tile configuration the launcher can choose
(:func:`spatialrec.ops.triton.launch_config`), down to a cubin for a given GPU architecture with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``: Triton's front end, its
MLIR passes, LLVM and ``ptxas`` (shipped in the Triton wheel) all run on the CPU. What it proves:
the kernels compile for the target (no unsupported dot shape, dtype or layout), and their
resources fit: shared memory per block within the target's opt-in limit, registers at least
:data:`REGISTER_HEADROOM` below 255, and no register spill stores. What it cannot prove: speed,
or that the driver loads and runs them (the GPU check, ``benchmarks/gpu_check.py``, does that on
a GPU).

Usage::

    from spatialrec.ops.aot import compile_matrix, format_table
    results = compile_matrix(archs=(80, 90))
    print(format_table(results))
    assert all(r.ok for r in results)

``python benchmarks/gpu_check.py --compile-only --arch sm_80,sm_90`` prints the same table.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Optional

from .. import options

SHARED_LIMITS: dict[int, int] = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024, 120: 99 * 1024}
"""Shared memory one block may use (opt-in maximum), bytes, per compute capability (CUDA guide)."""

MAX_REGISTERS = 255

REGISTER_HEADROOM = 24
"""Registers per thread a kernel must leave free below :data:`MAX_REGISTERS`. Register allocation
differs between Triton (and ptxas) versions: a kernel at 254 registers under Triton 3.9 spilled
under 3.8. A kernel within this margin of the cap fails the check like a spilling one."""

STATE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 150, 256)
"""State sizes whose launcher configurations are compiled (the paper uses 150)."""

DTYPES: tuple[str, ...] = ("float32", "float32-tf32", "bfloat16", "float16")
"""Input dtypes (``float32-tf32``: float32 with the ``triton_precision`` option at ``tf32``)."""

LINE_POSITIONS = 4096
"""Positions per line the configurations are chosen for (any line of >= 64 positions gets the
same, largest, row tile; shorter lines get smaller tiles, hence fewer resources)."""


@dataclass(frozen=True)
class CompileJob:
    """One kernel, one configuration, one target."""

    kernel: str
    spatial_dims: int
    dtype: str
    arch: int
    config: Any  # spatialrec.ops.triton.LaunchConfig
    state_sizes: tuple[int, ...] = field(compare=False)
    line: bool = False  # the carry="line" variant (kernels with a LINE constexpr)

    @property
    def name(self) -> str:
        """The kernel's name, with ``[line]`` for its ``carry="line"`` variant."""
        return f"{self.kernel}[line]" if self.line else self.kernel


@dataclass
class CompileResult:
    """What compiling a :class:`CompileJob` gave. ``shared`` in bytes (dynamic shared memory Triton
    requests at launch), ``registers`` per thread, ``local`` bytes of stack frame (local memory)
    per thread, ``spill_stores`` bytes of register spill stores per thread as ``ptxas -v`` reports
    them (read only when there is a stack frame), ``seconds`` of compile time."""

    job: CompileJob
    ok: bool
    shared: int = 0
    registers: int = 0
    local: int = 0
    seconds: float = 0.0
    error: str = ""
    spill_stores: int = 0

    @property
    def problems(self) -> list[str]:
        """Why this result fails the check (empty when it passes)."""
        if not self.ok:
            return [f"compile failed: {self.error}"]
        out = []
        limit = SHARED_LIMITS.get(self.job.arch)
        if limit is not None and self.shared > limit:
            out.append(f"shared memory {self.shared} B > {limit} B limit of sm_{self.job.arch}")
        if self.registers > MAX_REGISTERS:
            out.append(f"{self.registers} registers > {MAX_REGISTERS}")
        elif self.registers > MAX_REGISTERS - REGISTER_HEADROOM:
            out.append(f"{self.registers} registers: less than {REGISTER_HEADROOM} below the {MAX_REGISTERS} cap, a compiler version away from spilling")
        if self.spill_stores > 0:
            out.append(f"{self.spill_stores} B register spill stores ({self.local} B stack frame)")
        return out


def parse_arch(text: str) -> int:
    """``"sm_80"``, ``"80"``, ``"sm_90a"`` -> ``80``, ``90``.

    Raises:
        ValueError: not an architecture name.
    """
    t = text.strip().lower().removeprefix("sm_").removeprefix("sm").rstrip("a")
    if not t.isdigit():
        raise ValueError(f"arch={text!r} is not a CUDA architecture; expected e.g. 'sm_80', 'sm_90' or '100'")
    return int(t)


def kernel_module() -> ModuleType:
    """:mod:`spatialrec.ops.triton` (its launcher choices, kernel names and dot modes).

    Its kernels are compilable only when the module was imported without the Triton interpreter
    (``TRITON_INTERPRET=1`` makes ``triton.jit`` return interpreter objects): :func:`compile_job`
    checks that, and :func:`compile_matrix` compiles in fresh worker processes without it.
    """
    from . import triton as mod

    return mod


def _interpreted(mod: ModuleType) -> bool:
    from triton.runtime.jit import JITFunction  # type: ignore[import-untyped]

    return not isinstance(mod.KERNELS["_fwd_line"], JITFunction)


def _mode(mod: ModuleType, dtype: str) -> int:
    modes: dict[str, int] = {"float32": mod.IEEE, "float32-tf32": mod.TF32, "bfloat16": mod.BF16, "float16": mod.FP16}
    try:
        return modes[dtype]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not one of {DTYPES}") from None


def jobs(
    archs: Iterable[int] = (80, 90),
    dtypes: Iterable[str] = DTYPES,
    state_sizes: Iterable[int] = STATE_SIZES,
    spatial_dims: Iterable[int] = (2, 3),
    kernels: Optional[Iterable[str]] = None,
) -> list[CompileJob]:
    """The distinct compilations the launcher's choices need (state sizes sharing a configuration
    are grouped into one job)."""
    mod = kernel_module()
    names = tuple(kernels) if kernels is not None else tuple(mod.KERNELS)
    grouped: dict[tuple[str, int, str, int, Any, bool], list[int]] = {}
    for dims in spatial_dims:
        for dtype in dtypes:
            for s in state_sizes:
                for k in names:
                    cfg = mod.launch_config(LINE_POSITIONS, s, _mode(mod, dtype), 3 ** (dims - 1), k)
                    for arch in archs:
                        for line in (False, True) if mod.KERNELS[k] in mod.LINE_KERNELS else (False,):
                            grouped.setdefault((k, dims, dtype, arch, cfg, line), []).append(s)
    return [CompileJob(k, d, t, a, c, tuple(ss), ln) for (k, d, t, a, c, ln), ss in grouped.items()]


def _resource_usage(cubin: bytes, tool: str) -> tuple[int, int]:
    """``(registers, stack bytes)`` of the one function in ``cubin``, read by ``cuobjdump``."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    regs = stack = 0
    for tok in out.split():
        if tok.startswith("REG:"):
            regs = max(regs, int(tok[4:]))
        elif tok.startswith("STACK:"):
            stack = max(stack, int(tok[6:]))
    return regs, stack


def _spill_stores(ptx: str, arch: int) -> int:
    """Bytes of register spill stores ``ptxas -v`` reports for ``ptx`` (Triton's own ptxas flags)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", os.path.join(tmp, "k.o")]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    stores = 0
    for line in log.splitlines():
        if "spill stores" in line:
            # "    24 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
            parts = [p.strip() for p in line.split(",")]
            stores = max(stores, int(next(p for p in parts if p.endswith("spill stores")).split()[0]))
    return stores


def compile_job(job: CompileJob) -> CompileResult:
    """Compile one job for its target in this process; never raises for a compile error (see
    ``ok``/``error``).

    Raises:
        RuntimeError: this process imported the kernels under the Triton interpreter (use
            :func:`compile_matrix`, which compiles in clean worker processes).
    """
    import triton  # type: ignore[import-untyped]
    import triton.language as tl  # type: ignore[import-untyped]
    from triton.backends.compiler import GPUTarget  # type: ignore[import-untyped]
    from triton.compiler import ASTSource  # type: ignore[import-untyped]

    mod = kernel_module()
    if _interpreted(mod):
        raise RuntimeError("spatialrec.ops.triton was imported with TRITON_INTERPRET=1: its kernels cannot be compiled in this process; use compile_matrix()")
    fn = mod.KERNELS[job.kernel]
    cfg = job.config
    constexprs: dict[str, Any] = {
        "NSLOT": 3 ** (job.spatial_dims - 1),
        "BLOCK_M": cfg.block_m,
        "BLOCK_N": cfg.block_n,
        "BLOCK_K": cfg.block_k,
        "ACC": tl.float32,
        "MODE": _mode(mod, job.dtype),
    }
    if fn in mod.LINE_KERNELS:
        constexprs["LINE"] = job.line
    # Every buffer is in the compute dtype (float32) whatever the input dtype; sizes are int32.
    signature = {n: ("constexpr" if n in constexprs else "*fp32" if n.endswith("_ptr") else "i32") for n in fn.arg_names}
    t0 = time.perf_counter()
    try:
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs),
            target=GPUTarget("cuda", job.arch, 32),
            # enable_fp_fusion: Triton 3.9's default, asked for explicitly (else it warns that its default may change).
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "enable_fp_fusion": True},
        )
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        regs, stack = _resource_usage(compiled.asm["cubin"], tool)
        # A stack frame is not necessarily spilling (ptxas also puts some locals there): ask ptxas.
        spills = _spill_stores(compiled.asm["ptx"], job.arch) if stack > 0 else 0
        return CompileResult(job, True, int(compiled.metadata.shared), regs, stack, time.perf_counter() - t0, spill_stores=spills)
    except Exception as err:  # noqa: BLE001 - reported, the caller decides
        msg = " ".join(f"{type(err).__name__}: {err}".split())
        return CompileResult(job, False, seconds=time.perf_counter() - t0, error=msg[:500])


def compile_matrix(
    archs: Iterable[int] = (80, 90),
    dtypes: Iterable[str] = DTYPES,
    state_sizes: Iterable[int] = STATE_SIZES,
    spatial_dims: Iterable[int] = (2, 3),
    kernels: Optional[Iterable[str]] = None,
    workers: int = 1,
) -> list[CompileResult]:
    """Compile every job of :func:`jobs` in ``workers`` fresh processes (spawned; each compiles
    without ``TRITON_INTERPRET``, so that the kernels are compilable whatever this process imported)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    todo = jobs(archs, dtypes, state_sizes, spatial_dims, kernels)
    ctx = multiprocessing.get_context("spawn")
    # Jobs travel as plain values: unpickling a LaunchConfig would import Triton in the worker
    # before _compile_in_worker could keep the interpreter out of it.
    plain = [(j.kernel, j.spatial_dims, j.dtype, j.arch, dataclasses.astuple(j.config), j.state_sizes, j.line) for j in todo]
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
        return list(pool.map(_compile_in_worker, plain))


def _compile_in_worker(job: tuple[str, int, str, int, tuple[int, ...], tuple[int, ...], bool]) -> CompileResult:
    """:func:`compile_job` in a worker process of :func:`compile_matrix`. The worker inherits
    this process's environment, and Triton decides at import, from ``TRITON_INTERPRET``, whether
    its functions are interpreted or compilable: so the variable is unset around the import and
    the compile, in the worker only, and restored after; the caller's process is never touched."""
    kernel, dims, dtype, arch, config, state_sizes, line = job
    with options.scoped_environ(TRITON_INTERPRET=None):
        mod = kernel_module()
        return compile_job(CompileJob(kernel, dims, dtype, arch, mod.LaunchConfig(*config), state_sizes, line))


def supported_archs(candidates: Sequence[int] = (80, 90, 100)) -> tuple[int, ...]:
    """The architectures of ``candidates`` the installed Triton can target."""
    from triton.backends.compiler import GPUTarget  # type: ignore[import-untyped]
    from triton.backends.nvidia.compiler import CUDABackend  # type: ignore[import-untyped]

    out = []
    for arch in candidates:
        try:
            CUDABackend(GPUTarget("cuda", arch, 32))
        except Exception:  # noqa: BLE001 - this Triton does not know the target
            pass
        else:
            out.append(arch)
    return tuple(out)


def format_table(results: Sequence[CompileResult]) -> str:
    """A Markdown table of ``results`` (one row per kernel, configuration and target)."""
    head = "| kernel | dims | dtype | S | tile (M x N x K, warps, stages) | target | shared KiB (limit) | regs | stack / spill stores B | status |"
    rows = [head, "|" + "---|" * 10]
    for r in sorted(results, key=lambda r: (r.job.spatial_dims, r.job.name, r.job.dtype, r.job.state_sizes, r.job.arch)):
        j, c = r.job, r.job.config
        limit = SHARED_LIMITS.get(j.arch)
        status = "ok" if not r.problems else "; ".join(r.problems)
        rows.append(
            f"| {j.name} | {j.spatial_dims}D | {j.dtype} | {','.join(map(str, j.state_sizes))} | "
            f"{c.block_m}x{c.block_n}x{c.block_k}, {c.num_warps}, {c.num_stages} | sm_{j.arch} | "
            f"{r.shared / 1024:.0f} ({'-' if limit is None else limit // 1024}) | {r.registers} | {r.local} / {r.spill_stores} | {status} |"
        )
    return "\n".join(rows)


def format_wide_table(results: Sequence[CompileResult]) -> str:
    """The same as :func:`format_table` with one row per kernel and configuration and one
    ``shared KiB / registers / spill bytes`` column per target (the layout of ``docs/kernels.md``)."""
    archs = sorted({r.job.arch for r in results})
    cells: dict[tuple[str, int, str, tuple[int, ...], Any], dict[int, CompileResult]] = {}
    for r in results:
        j = r.job
        cells.setdefault((j.name, j.spatial_dims, j.dtype, j.state_sizes, j.config), {})[j.arch] = r
    head = "| kernel | dims | dtype | S | tile (M x N x K, warps, stages) | " + " | ".join(f"sm_{a}: smem KiB / regs / stack B / spill B" for a in archs) + " |"
    rows = [head, "|" + "---|" * (5 + len(archs))]
    for (k, d, t, ss, c), by_arch in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2], kv[0][3])):
        parts = []
        for a in archs:
            cell = by_arch.get(a)
            if cell is None:
                parts.append("-")
            elif not cell.ok:
                parts.append("FAILED")
            else:
                flag = "" if not cell.problems else " **over**"
                parts.append(f"{cell.shared / 1024:.0f} / {cell.registers} / {cell.local} / {cell.spill_stores}{flag}")
        rows.append(f"| {k} | {d}D | {t} | {','.join(map(str, ss))} | {c.block_m}x{c.block_n}x{c.block_k}, {c.num_warps}, {c.num_stages} | " + " | ".join(parts) + " |")
    return "\n".join(rows)


__all__ = [
    "DTYPES",
    "MAX_REGISTERS",
    "REGISTER_HEADROOM",
    "SHARED_LIMITS",
    "STATE_SIZES",
    "CompileJob",
    "CompileResult",
    "compile_job",
    "compile_matrix",
    "kernel_module",
    "format_table",
    "format_wide_table",
    "jobs",
    "parse_arch",
    "supported_archs",
]
