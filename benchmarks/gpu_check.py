"""One GPU check of the scan kernels: compile, correctness, speed and memory, in under 5 minutes.

Usage::

    python benchmarks/gpu_check.py                                  # everything, on cuda:0
    python benchmarks/gpu_check.py --json gpu_check.json            # also write the raw results
    python benchmarks/gpu_check.py --compile-only --arch sm_80,sm_90 # no GPU needed: the AOT table
    python benchmarks/gpu_check.py --device cpu --tiny              # the CPU-runnable parts (tests)

Parts:

(0) ahead-of-time compilation of every Triton kernel configuration for ``--arch``
    (:mod:`spatialrec.ops.aot`; the only part ``--compile-only`` runs; skipped on a GPU unless
    ``--compile`` is given, since running the kernels there proves more);
(a) correctness on the device of ``triton`` (every dot precision the dtype uses) and ``fused``
    against ``reference`` computed in float64 on the same inputs: float32 and bfloat16, 2D and
    3D, forward and every gradient, as a relative max error (float32 exact mode must be <= 1e-4,
    tf32 <= 1e-2, bfloat16 <= 5e-2);
(b) forward+backward time and peak memory of the two sweeps (right then down, on a ``(B, S, H,
    W)`` state) at the paper configuration, 256x256 and 512x512: the published strategy
    (``naive``, from ``bench_scan.py``), ``fused``, ``triton`` (float32 ieee, tf32, bfloat16), and
    two reference points of the same width on the same GPU: a cuDNN ``nn.GRU`` swept along every
    row then every column (the closest library recurrence: no neighbour coupling, so less work
    than the SDN sweep), and ``scaled_dot_product_attention`` over all ``H*W`` positions with
    ``S`` channels (one head);
(c) a JSON file (``--json``) and a printed table. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from spatialrec import options  # noqa: E402
from spatialrec.ops import directional_gru_scan, directional_gru_scan_sequence  # noqa: E402

TIMING_CONFIGS: dict[str, dict[str, int]] = {
    "paper": dict(batch=4, state=150, height=128, width=128),
    "256x256_S64": dict(batch=4, state=64, height=256, width=256),
    "b1_512x512_S32": dict(batch=1, state=32, height=512, width=512),
}
TINY_CONFIGS: dict[str, dict[str, int]] = {"tiny": dict(batch=1, state=8, height=6, width=5)}
DIRECTIONS = ("right", "down")
TOLERANCE = {"float32": 1e-4, "float32-tf32": 1e-2, "bfloat16": 5e-2}


def _params(s: int, k: int, device: torch.device, g: torch.Generator) -> list[torch.Tensor]:
    bound = 1.0 / s**0.5
    shapes = [(3 * s, k * s), (3 * s, s), (3 * s,), (3 * s,)]
    return [((torch.rand(*sh, generator=g) * 2 - 1) * bound).to(device) for sh in shapes]


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def _with_precision(value: str) -> Any:
    """Context manager setting the Triton float32 precision, ``"ieee"`` or ``"tf32"``."""
    return options.override(triton_precision=value)


# --------------------------------------------------------------------------------------------
# (a) correctness
# --------------------------------------------------------------------------------------------
def check_correctness(device: torch.device, backends: list[str], tiny: bool) -> list[dict]:
    """Every backend x dtype x dims against float64 ``reference`` on the device."""
    rows = []
    shapes = {2: (2, 20, 9, 13), 3: (1, 20, 5, 6, 7)} if tiny else {2: (2, 150, 33, 47), 3: (1, 32, 9, 17, 23)}
    for dims, shape in shapes.items():
        g = torch.Generator().manual_seed(dims)
        s = shape[1]
        x = torch.randn(*shape, generator=g).to(device)
        params = _params(s, 3 ** (dims - 1), device, g)
        grad_out = torch.randn(*shape, generator=g).to(device)
        direction = "up" if dims == 2 else "in"
        leaves64 = [t.double().requires_grad_(True) for t in (x, *params)]
        y64 = directional_gru_scan(leaves64[0], *leaves64[1:], direction, backend="reference")
        want = [y64, *torch.autograd.grad(y64, leaves64, grad_out.double())]
        for backend in backends:
            for dtype_name in ("float32", "float32-tf32", "bfloat16"):
                if dtype_name == "float32-tf32" and backend != "triton":
                    continue
                dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
                row: dict[str, Any] = {"dims": dims, "shape": list(shape), "backend": backend, "dtype": dtype_name}
                try:
                    with _with_precision("tf32" if dtype_name == "float32-tf32" else "ieee"):
                        leaves = [x.to(dtype).requires_grad_(True), *(p.clone().requires_grad_(True) for p in params)]
                        y = directional_gru_scan(leaves[0], *leaves[1:], direction, backend=backend)
                        got = [y, *torch.autograd.grad(y, leaves, grad_out.to(dtype))]
                    errs = [_rel(a, b) for a, b in zip(got, want)]
                    row.update(forward=errs[0], grads=max(errs[1:]), ok=max(errs) <= TOLERANCE[dtype_name], error="")
                except Exception as err:  # noqa: BLE001 - reported in the table
                    row.update(forward=float("nan"), grads=float("nan"), ok=False, error=f"{type(err).__name__}: {err}"[:300])
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# (b) timing and memory
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, Optional[int]]:
    """(median seconds, peak extra bytes on CUDA) of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    from bench_scan import peak_extra_bytes

    return statistics.median(times), peak_extra_bytes(fn, device) if device.type == "cuda" else None


def _sdn_fn(backend: str, h: torch.Tensor, params: list[list[torch.Tensor]], dtype: torch.dtype) -> Callable[[], None]:
    from bench_scan import naive_sweep

    def run() -> None:
        x = h.detach().to(dtype).requires_grad_(True)
        for p in params:
            for t in p:
                t.grad = None
        if backend == "naive":
            y = x
            for p, d in zip(params, DIRECTIONS):
                y = naive_sweep(y, *p, d)
        else:
            y = directional_gru_scan_sequence(x, [tuple(p) for p in params], DIRECTIONS, backend=backend)
        y.float().sum().backward()

    return run


def _gru_fn(h: torch.Tensor) -> Callable[[], None]:
    """cuDNN GRU along every row (sequence W, batch B*H), then along every column."""
    b, s, hh, w = h.shape
    rows = torch.nn.GRU(s, s, batch_first=True).to(h.device)
    cols = torch.nn.GRU(s, s, batch_first=True).to(h.device)

    def run() -> None:
        rows.zero_grad(set_to_none=True)
        cols.zero_grad(set_to_none=True)
        x = h.detach().requires_grad_(True)
        seq = x.permute(0, 2, 3, 1).reshape(b * hh, w, s)
        y, _ = rows(seq)
        y = y.reshape(b, hh, w, s).permute(0, 2, 1, 3).reshape(b * w, hh, s)
        y, _ = cols(y)
        y.sum().backward()

    return run


def _sdpa_fn(h: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """Self-attention over all H*W positions, S channels, one head (q = k = v = the state)."""

    def run() -> None:
        x = h.detach().to(dtype).requires_grad_(True)
        q = x.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, HW, S)
        F.scaled_dot_product_attention(q, q, q).float().sum().backward()

    return run


def check_timing(device: torch.device, configs: dict[str, dict[str, int]], backends: list[str], warmup: int, repeats: int, budget_s: float) -> list[dict]:
    rows = []
    t_start = time.perf_counter()
    for name, cfg in configs.items():
        g = torch.Generator().manual_seed(0)
        s = cfg["state"]
        h = torch.tanh(torch.randn(cfg["batch"], s, cfg["height"], cfg["width"], generator=g)).to(device)
        params = [[p.requires_grad_(True) for p in _params(s, 3, device, g)] for _ in DIRECTIONS]
        cases: list[tuple[str, Callable[[], None]]] = []
        for backend in backends:
            if backend == "triton":
                cases.append(("triton (fp32 ieee)", _sdn_fn("triton", h, params, torch.float32)))
                cases.append(("triton (fp32 tf32)", _sdn_fn("triton", h, params, torch.float32)))
                cases.append(("triton (bf16)", _sdn_fn("triton", h, params, torch.bfloat16)))
            else:
                cases.append((backend, _sdn_fn(backend, h, params, torch.float32)))
        if device.type == "cuda":
            cases.append(("cudnn GRU rows+cols", _gru_fn(h)))
            cases.append(("SDPA fp32", _sdpa_fn(h, torch.float32)))
            cases.append(("SDPA bf16", _sdpa_fn(h, torch.bfloat16)))
        for label, fn in cases:
            row: dict[str, Any] = {"config": name, **cfg, "case": label}
            if time.perf_counter() - t_start > budget_s:
                row.update(seconds=float("nan"), peak_bytes=None, error="skipped: time budget spent")
                rows.append(row)
                continue
            try:
                with _with_precision("tf32" if "tf32" in label else "ieee"):
                    reps = 1 if label == "naive" else repeats
                    sec, peak = _measure(fn, device, warmup if label != "naive" else 1, reps)
                row.update(seconds=sec, peak_bytes=peak, error="")
            except Exception as err:  # noqa: BLE001 - reported in the table
                row.update(seconds=float("nan"), peak_bytes=None, error=f"{type(err).__name__}: {err}"[:300])
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# (c) report
# --------------------------------------------------------------------------------------------
def format_correctness(rows: list[dict]) -> str:
    out = ["| dims | backend | dtype | forward rel err | max grad rel err | ok |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['dims']}D | {r['backend']} | {r['dtype']} | {r['forward']:.2e} | {r['grads']:.2e} | {'yes' if r['ok'] else 'NO ' + r['error']} |")
    return "\n".join(out)


def format_timing(rows: list[dict]) -> str:
    out = ["| config | case | fwd+bwd ms | x naive | peak MB | /naive |", "|---|---|---|---|---|---|"]
    base = {r["config"]: r for r in rows if r["case"] == "naive"}
    for r in rows:
        b = base.get(r["config"])
        sp = b["seconds"] / r["seconds"] if b and r["seconds"] == r["seconds"] and r["seconds"] > 0 else float("nan")
        mem = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        mem_ratio = f"{r['peak_bytes'] / b['peak_bytes']:.2f}" if b and r["peak_bytes"] and b["peak_bytes"] else "n/a"
        note = f" ({r['error']})" if r["error"] else ""
        out.append(f"| {r['config']} | {r['case']}{note} | {r['seconds'] * 1e3:.1f} | {sp:.1f} | {mem} | {mem_ratio} |")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile-only", action="store_true", help="only the ahead-of-time compile table (no GPU needed)")
    parser.add_argument("--compile", action="store_true", help="also run the compile table on a GPU machine")
    parser.add_argument("--arch", default="sm_80,sm_90", help="targets of the compile table, comma-separated")
    parser.add_argument("--dtypes", default=None, help="compile table dtypes (default: all of spatialrec.ops.aot.DTYPES)")
    parser.add_argument("--state-sizes", default=None, help="compile table state sizes (default: 16,32,64,128,150,256)")
    parser.add_argument("--dims", default="2,3", help="compile table spatial dims")
    parser.add_argument("--wide", action="store_true", help="compile table: one column per target")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for the CPU test of this script)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=200.0, help="seconds for the timing part before it skips the rest")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"machine": platform.platform(), "torch": torch.__version__}
    failed = False
    if args.compile_only or args.compile:
        from spatialrec.ops import aot

        archs = [aot.parse_arch(a) for a in args.arch.split(",") if a.strip()]
        kw: dict[str, Any] = {"spatial_dims": [int(d) for d in args.dims.split(",")]}
        if args.dtypes:
            kw["dtypes"] = args.dtypes.split(",")
        if args.state_sizes:
            kw["state_sizes"] = [int(s) for s in args.state_sizes.split(",")]
        t0 = time.perf_counter()
        results = aot.compile_matrix(archs=archs, workers=args.workers, **kw)
        print(f"## Ahead-of-time compile ({len(results)} kernels, {time.perf_counter() - t0:.0f} s)\n")
        print(aot.format_wide_table(results) if args.wide else aot.format_table(results))
        bad = [r for r in results if r.problems]
        print(f"\n{len(results) - len(bad)}/{len(results)} pass")
        failed |= bool(bad)
        report["compile"] = [
            {"kernel": r.job.name, "dims": r.job.spatial_dims, "dtype": r.job.dtype, "arch": r.job.arch, "state_sizes": list(r.job.state_sizes),
             "config": vars(r.job.config) if hasattr(r.job.config, "__dict__") else str(r.job.config), "shared": r.shared, "registers": r.registers,
             "local": r.local, "seconds": r.seconds, "problems": r.problems}
            for r in results
        ]
    if not args.compile_only:
        device = torch.device(args.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                parser.error("no CUDA device: run with --compile-only, or --device cpu --tiny")
            report["gpu"] = torch.cuda.get_device_name(device)
            print(f"GPU: {report['gpu']}")
        triton_ok = device.type == "cuda" or options.triton_interpret()
        backends = ["fused"] + (["triton"] if triton_ok else [])
        corr = check_correctness(device, backends, args.tiny)
        print("\n## Correctness against reference (float64)\n")
        print(format_correctness(corr))
        failed |= not all(r["ok"] for r in corr)
        configs = TINY_CONFIGS if args.tiny else TIMING_CONFIGS
        timing = check_timing(device, configs, ["naive", *backends], args.warmup, args.repeats, args.budget)
        print("\n## Forward+backward of the two sweeps (right, down)\n")
        print(format_timing(timing))
        report.update(correctness=corr, timing=timing)
        # After all that, "auto" must still pick triton on the GPU: no kernel failed and fell back.
        from spatialrec.ops import resolve_backend

        probe = torch.zeros(1, 1, 1, 1, device=device)
        report["auto"] = {"resolves_to": resolve_backend("auto", probe), "triton_failure": options.triton_fallback().get(str(probe.device))}
        print(f"\nbackend='auto' resolves to {report['auto']['resolves_to']!r}; Triton failure seen by 'auto': {report['auto']['triton_failure']}")
        if device.type == "cuda" and report["auto"]["resolves_to"] != "triton":
            failed = True
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
