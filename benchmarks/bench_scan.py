"""Benchmark the directional GRU scan backends against the published implementation's strategy.

Usage::

    python benchmarks/bench_scan.py            # every configuration
    python benchmarks/bench_scan.py --quick    # the paper's configuration only

Each configuration runs in its own process (so that peak-memory readings of one do not leak into
the next). Within it, on the same inputs and parameters of one SDN layer (project-in conv + tanh,
one sweep per direction, 1x1 project-out conv), it measures

- ``naive``: the published strategy, re-stated below: every line is written in place into the
  state tensor, zero padding by ``torch.cat``, autograd through all of it (always the published
  cell, serial sweeps with the prior carry);
- ``reference``, ``fused``, and ``triton`` (only on CUDA) from :mod:`spatialrec.ops`, through the
  layer with the cell ``--cell`` names (``default``: the library's default, line carry, sweeps
  side by side; ``published``: prior carry, serial), the fused CPU workspace on or off
  (``--workspace``, :mod:`spatialrec.ops.workspace`) and its CPU line kernel native or torch's
  ops (``--cpu-kernel``, :mod:`spatialrec.ops.native`);
- ``gemm``: only the GEMMs the sweeps need (per line ``(B*W, 3S) x (3S, 3S)`` and the prior
  term ``(H*B*W, S) x (S, 3S)`` per direction), the throughput ceiling of this machine on these
  shapes.

A backend's GFLOP/s counts the layer's useful FLOPs (sweeps + the two convolutions, a few percent
of the total; the backward counted as twice the forward), whatever work it recomputes.

The ``3d_*`` configurations (``--3d`` runs only those) measure one
:class:`spatialrec.SpatialDependencyLayer3d` on a volume the same way, with the naive strategy
carried to 3D (every plane written in place; see ``benchmarks/bench_scan3d.py``) and the 3D GEMM
shapes (per plane ``(B*plane, 9S) x (9S, 3S)``); ``triton`` runs there too on CUDA (the N-d kernels).

Figures: forward time (no grad), forward+backward time (median of ``--repeats`` runs after
``--warmup``, each run alternated with a run of the GEMM ceiling; process CPU time beside wall
time), peak extra memory of one forward+backward (measured in a second process; CPU: process
peak RSS above the level before the run, via ``/proc/self/clear_refs``, with every block above
64 KiB its own mapping so that freed tensors leave the process; CUDA: ``max_memory_allocated``),
and the scan's useful GFLOP/s. ``--malloc reuse`` times with glibc keeping freed memory for
reuse (no page faults on fresh tensors, as with jemalloc, tcmalloc or a caching allocator);
the default ``fresh`` times the environment's own malloc. Every figure is printed as a ratio to ``naive`` and GFLOP/s as a fraction of the
``gemm`` figure measured in the same run: machines are shared and noisy, ratios are what compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

CONFIGS: dict[str, dict] = {
    "paper": dict(batch=4, channels=32, state=150, height=128, width=128, directions=["right", "down"]),
    "cvc_96x128": dict(batch=4, channels=32, state=150, height=96, width=128, directions=["right", "down"]),
    "256x256_S64": dict(batch=4, channels=32, state=64, height=256, width=256, directions=["right", "down"]),
    "b2_256x256_S64": dict(batch=2, channels=32, state=64, height=256, width=256, directions=["right", "down"]),
    "b1_512x512_S32": dict(batch=1, channels=32, state=32, height=512, width=512, directions=["right", "down"]),
    # 3D (SpatialDependencyLayer3d, benchmarks/bench_scan3d.py): a volume (B, C, D, H, W) swept plane by plane.
    "3d_64x64x64_S32": dict(batch=1, channels=32, state=32, depth=64, height=64, width=64, directions=["right", "down", "in"]),
    "3d_32x32x32_S16": dict(batch=1, channels=16, state=16, depth=32, height=32, width=32, directions=["right", "down", "in"]),
}


# --------------------------------------------------------------------------------------------
# The published strategy, re-stated (docs/maths.md).
# --------------------------------------------------------------------------------------------
def naive_sweep(h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, direction: str) -> torch.Tensor:
    """One sweep the way the published code does it: ``h: (B, S, H, W)`` -> same shape."""
    from spatialrec.ops import from_canonical_view, to_canonical_view

    state = to_canonical_view(h, direction).clone()
    b, s, n_lines, w = state.shape
    for i in range(1, n_lines):
        prev = state[:, :, i - 1, :]
        zeros = torch.zeros(b, s, 1, dtype=state.dtype, device=state.device)
        padded = torch.cat([zeros, prev, zeros], dim=2)
        a = torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=1)
        a = a.permute(0, 2, 1).reshape(b * w, 3 * s)
        # A copy: a view of the state would be overwritten by a later in-place line write.
        p = state[:, :, i, :].permute(0, 2, 1).reshape(b * w, s).clone()
        gi = F.linear(a, w_ih, b_ih)
        gh = F.linear(p, w_hh, b_hh)
        r = torch.sigmoid(gi[:, :s] + gh[:, :s])
        z = torch.sigmoid(gi[:, s : 2 * s] + gh[:, s : 2 * s])
        n = torch.tanh(gi[:, 2 * s :] + r * gh[:, 2 * s :])
        new = z * n + (1 - z) * p
        state[:, :, i, :] = new.reshape(b, w, s).permute(0, 2, 1)
    return from_canonical_view(state, direction)


def layer_forward(layer: torch.nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    """The SDN layer's forward with the given scan backend (``naive`` = the published strategy)."""
    if backend != "naive":
        layer.backend = backend
        return layer(x)
    h = torch.tanh(layer.project_in(x))
    for sweep in layer.sweeps:
        h = naive_sweep(h, sweep.weight_ih, sweep.weight_hh, sweep.bias_ih, sweep.bias_hh, sweep.direction)
    return layer.project_out(h)


# --------------------------------------------------------------------------------------------
# Measurement helpers.
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def _paired_times(fn: Callable[[], object], gemm: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median wall/CPU time of ``fn`` and of the GEMM ceiling, run alternately.

    On a shared machine the load changes from second to second: timing the GEMM ceiling right
    next to each run keeps the ratio between them meaningful.
    """
    for _ in range(warmup):
        fn()
    runs = [(_timed(gemm, device), _timed(fn, device)) for _ in range(repeats)]
    med = statistics.median
    return {
        "wall": med(r[1][0] for r in runs),
        "cpu": med(r[1][1] for r in runs),
        "gemm_wall": med(r[0][0] for r in runs),
        "ratio_to_gemm": med(r[0][0] / r[1][0] for r in runs),
    }


def _read_status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak memory above the level before ``fn()`` (None where it cannot be measured)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
    except OSError:
        return None
    base = _read_status_kib("VmRSS")
    fn()
    peak = _read_status_kib("VmHWM")
    if base is None or peak is None:
        return None
    return (peak - base) * 1024


def layer_flops(cfg: dict) -> float:
    """Useful FLOPs of the layer's forward: the sweeps plus the 3x3 project-in and 1x1 project-out convolutions."""
    b, s, h, w, c = cfg["batch"], cfg["state"], cfg["height"], cfg["width"], cfg["channels"]
    return scan_flops(cfg) + 2.0 * b * h * w * (s * c * 9 + c * s)


def scan_flops(cfg: dict) -> float:
    """Useful FLOPs of the sweeps' forward: per direction, 2*(H'-1)*B*W'*(9S^2 + 3S^2)."""
    b, s, h, w = cfg["batch"], cfg["state"], cfg["height"], cfg["width"]
    total = 0.0
    for d in cfg["directions"]:
        n_lines, line = (w, h) if d in ("right", "left") else (h, w)
        total += 2.0 * (n_lines - 1) * b * line * 12 * s * s
    return total


def gemm_only(cfg: dict, device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    """The GEMMs of the sweeps' forward alone, on the same shapes, into preallocated outputs."""
    b, s, h, w = cfg["batch"], cfg["state"], cfg["height"], cfg["width"]
    work = []
    for d in cfg["directions"]:
        n_lines, line = (w, h) if d in ("right", "left") else (h, w)
        m = b * line
        a = torch.randn(m, 3 * s, device=device, dtype=dtype)
        wt = torch.randn(3 * s, 3 * s, device=device, dtype=dtype)
        out = torch.empty(m, 3 * s, device=device, dtype=dtype)
        xp = torch.randn(n_lines * m, s, device=device, dtype=dtype)
        wh = torch.randn(s, 3 * s, device=device, dtype=dtype)
        outp = torch.empty(n_lines * m, 3 * s, device=device, dtype=dtype)
        work.append((n_lines, a, wt, out, xp, wh, outp))

    def run() -> None:
        for n_lines, a, wt, out, xp, wh, outp in work:
            torch.mm(xp, wh, out=outp)
            for _ in range(n_lines - 1):
                torch.mm(a, wt, out=out)

    return run


def run_config(name: str, cfg: dict, device: torch.device, backends: list[str], warmup: int, repeats: int, measure: str = "time", cell: str = "default") -> dict:
    """Time (``measure="time"``) or measure the peak memory (``"memory"``) of every backend on one
    configuration, with the layer's ``cell`` (``"default"`` or ``"published"``)."""
    from spatialrec import SpatialDependencyLayer
    from spatialrec.blocks import set_sdn_cell
    from spatialrec.layers import PUBLISHED_CELL
    from spatialrec.ops import workspace

    torch.manual_seed(0)
    if "depth" in cfg:
        # A 3D configuration: its layer, input, FLOP counts, GEMM shapes and naive strategy come
        # from bench_scan3d.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_scan3d import bench_scan_parts3d

        layer, x, flops, sflops, gemm, forward = bench_scan_parts3d(cfg, device)
    else:
        layer = SpatialDependencyLayer(cfg["channels"], cfg["channels"], state_size=cfg["state"], directions=cfg["directions"]).to(device)
        x = torch.randn(cfg["batch"], cfg["channels"], cfg["height"], cfg["width"], device=device)
        flops, sflops = layer_flops(cfg), scan_flops(cfg)
        gemm = gemm_only(cfg, device, torch.float32)
        forward = layer_forward
    if cell == "published":
        set_sdn_cell(layer, **PUBLISHED_CELL)
    result: dict = {"config": name, **cfg, "device": str(device), "threads": torch.get_num_threads(), "rows": {}}

    gemm()
    gemm_walls = []

    for backend in backends:
        def fwd() -> None:
            with torch.no_grad():
                forward(layer, x, backend)

        def fwd_bwd() -> None:
            layer.zero_grad(set_to_none=True)
            xg = x.detach().requires_grad_(True)
            forward(layer, xg, backend).sum().backward()

        print(f"[{name}] {backend} {measure} ...", file=sys.stderr, flush=True)
        if measure == "memory":
            fwd_bwd()  # the first call may allocate lasting state (e.g. oneDNN primitives)
            layer.zero_grad(set_to_none=True)
            workspace.release()  # the step's own peak: the workspace fills again within it
            result["rows"][backend] = {"peak_extra_bytes": peak_extra_bytes(fwd_bwd, device)}
            layer.zero_grad(set_to_none=True)
            continue
        rep = max(1, repeats if backend != "naive" else min(repeats, 3))
        f = _paired_times(fwd, gemm, device, warmup, rep)
        fb = _paired_times(fwd_bwd, gemm, device, warmup, rep)
        gemm_walls += [f["gemm_wall"], fb["gemm_wall"]]
        layer.zero_grad(set_to_none=True)
        result["rows"][backend] = {
            "fwd_s": f["wall"],
            "fwd_cpu_s": f["cpu"],
            "fwd_bwd_s": fb["wall"],
            "fwd_bwd_cpu_s": fb["cpu"],
            "fwd_gflops": flops / f["wall"] / 1e9,
            "fwd_bwd_gflops": 3 * flops / fb["wall"] / 1e9,  # backward = 2x the forward's GEMM work
            # GFLOP/s as a fraction of the GEMM ceiling timed next to each run.
            "fwd_frac_gemm": f["ratio_to_gemm"] * flops / sflops,
            "fwd_bwd_frac_gemm": fb["ratio_to_gemm"] * 3 * flops / sflops,
        }
    if gemm_walls:
        result["gemm_gflops"] = sflops / statistics.median(gemm_walls) / 1e9
    return result


def _fmt_mb(v: Optional[int]) -> str:
    return "n/a" if v is None else f"{v / 2**20:.0f}"


def print_result(res: dict) -> None:
    rows = res["rows"]
    base = rows.get("naive")
    print(
        f"\n== {res['config']}: B={res['batch']} C={res['channels']} S={res['state']} "
        f"{str(res['depth']) + 'x' if 'depth' in res else ''}{res['height']}x{res['width']} "
        f"dirs={'+'.join(res['directions'])} on {res['device']} "
        f"({res['threads']} threads); GEMM on these shapes: {res['gemm_gflops']:.1f} GFLOP/s (median)"
    )
    head = (
        f"{'backend':<10} {'fwd s':>8} {'x naive':>8} {'f+b s':>8} {'x naive':>8} {'(cpu)':>7} "
        f"{'peak MB':>8} {'/naive':>7} {'fwd GF/s':>9} {'/gemm':>6} {'f+b GF/s':>9} {'/gemm':>6}"
    )
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for name, r in rows.items():
        sp_f = base["fwd_s"] / r["fwd_s"] if base else nan
        sp_fb = base["fwd_bwd_s"] / r["fwd_bwd_s"] if base else nan
        sp_fb_cpu = base["fwd_bwd_cpu_s"] / r["fwd_bwd_cpu_s"] if base else nan
        mem_ratio = (
            f"{r['peak_extra_bytes'] / base['peak_extra_bytes']:.2f}"
            if base and r["peak_extra_bytes"] is not None and base["peak_extra_bytes"]
            else "n/a"
        )
        print(
            f"{name:<10} {r['fwd_s']:>8.3f} {sp_f:>8.2f} {r['fwd_bwd_s']:>8.3f} {sp_fb:>8.2f} {sp_fb_cpu:>7.2f} "
            f"{_fmt_mb(r['peak_extra_bytes']):>8} {mem_ratio:>7} {r['fwd_gflops']:>9.1f} "
            f"{r['fwd_frac_gemm']:>6.2f} {r['fwd_bwd_gflops']:>9.1f} {r['fwd_bwd_frac_gemm']:>6.2f}"
        )
    print("x naive: speed-up over naive (wall); (cpu): the same in process CPU time; /gemm: fraction of the")
    print("GEMM ceiling timed alternately with each run; peak MB: peak extra memory of one forward+backward.")


# glibc malloc settings (environment variables read at process start) of the child processes.
# "fresh": none (the environment's own). "reuse": never return memory to the system, so freed
# tensors' pages are handed out again without page faults (what jemalloc/tcmalloc or a caching
# allocator give). "measure" (peak-memory runs; also "mmap" for timing): every block above 64 KiB
# is its own mapping, so freed tensors leave the process and the peak resident set tracks the
# live tensors.
MALLOC_MODES: dict[str, dict[str, str]] = {
    "fresh": {},
    "reuse": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 50)},
    "measure": {"MALLOC_MMAP_THRESHOLD_": "65536"},
}
MALLOC_MODES["mmap"] = MALLOC_MODES["measure"]
_MALLOC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def _child_env(src: str, malloc: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARS or k in malloc}
    env.update(malloc)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_child(cmd: list[str], env: dict[str, str], verbose: bool) -> Optional[dict]:
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"{' '.join(cmd[2:])} failed:\n{(proc.stderr or '')[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the paper's configuration")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="only the 3D configurations (3d_*)")
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS), help="configurations to run (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="*", default=None, help="default: naive reference fused (+ triton on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="show each configuration's progress")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument(
        "--malloc",
        choices=("fresh", "reuse", "mmap"),
        default="fresh",
        help="CPU memory for the timing runs: 'fresh' (glibc as the environment configures it: blocks of 32 MiB "
        "and more are fresh pages that fault on first touch), 'reuse' (glibc keeps freed memory and hands it out "
        "again, like a caching allocator) or 'mmap' (every block above 64 KiB is fresh: how this benchmark timed "
        "until round two, which penalises many small allocations); see docs/kernels.md",
    )
    parser.add_argument(
        "--cell",
        choices=("default", "published"),
        default="default",
        help="the layer's cell: the library's default (line carry, sweeps side by side) or the published one "
        "(prior carry, serial); spatialrec.layers.DEFAULT_CELL / PUBLISHED_CELL",
    )
    parser.add_argument(
        "--workspace",
        choices=("on", "off"),
        default="off",
        help="the fused kernels' CPU workspace (spatialrec.ops.workspace, off by default in the library): "
        "'on' sets its limit to SUGGESTED_LIMIT, 'off' allocates every buffer afresh",
    )
    parser.add_argument(
        "--cpu-kernel",
        choices=("auto", "native", "torch"),
        default="auto",
        help="how the fused backend does a line's element-wise work on the CPU (the cpu_kernel option, "
        "spatialrec.ops.native): the native line kernel, torch's ops, or auto (native where it builds)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    backends = args.backends or (["naive", "reference", "fused"] + (["triton"] if device.type == "cuda" else []))
    if "triton" in backends and device.type != "cuda":
        parser.error("the triton column runs only on CUDA (its CPU mode is the slow test interpreter)")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from spatialrec.ops import workspace

    workspace.set_limit(workspace.SUGGESTED_LIMIT if args.workspace == "on" else 0)
    from spatialrec import options

    options.set_cpu_kernel(args.cpu_kernel)
    if args.child is not None:
        res = run_config(args.child, CONFIGS[args.child], device, backends, args.warmup, args.repeats, args.measure, args.cell)
        print("RESULT " + json.dumps(res))
        return 0

    names = ["paper"] if args.quick else (args.configs or list(CONFIGS))
    if args.three_d:
        names = [n for n in (args.configs or list(CONFIGS)) if "depth" in CONFIGS[n]]
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"CPU memory for the timing runs: --malloc {args.malloc}; peak memory measured in a separate process")
    print(f"cell: {args.cell}; fused CPU workspace: {args.workspace}; CPU line kernel: {args.cpu_kernel}")
    src = str(Path(__file__).resolve().parents[1] / "src")
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--backends", *backends, "--cell", args.cell, "--workspace", args.workspace, "--cpu-kernel", args.cpu_kernel]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        res = _run_child(cmd + ["--measure", "time"], _child_env(src, MALLOC_MODES[args.malloc]), args.verbose)
        mem = _run_child(cmd + ["--measure", "memory"], _child_env(src, MALLOC_MODES["measure"]), args.verbose)
        if res is None or mem is None:
            print(f"configuration {name} failed", file=sys.stderr)
            return 1
        for backend, row in res["rows"].items():
            row["peak_extra_bytes"] = mem["rows"][backend]["peak_extra_bytes"]
        res["malloc"], res["cell"], res["workspace"], res["cpu_kernel"] = args.malloc, args.cell, args.workspace, args.cpu_kernel
        results.append(res)
        print_result(res)
        sys.stdout.flush()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
