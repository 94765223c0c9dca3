"""Benchmark every registered model: parameters, training-step time and peak memory, as ratios to `unet`.

For each model and input size (default 96x128 and 128x128, batch 4) it measures

- the number of parameters;
- the time of one training step (forward, BCE-with-logits loss, backward, Adam step), the median
  over ``--iters`` timed steps after ``--warmup`` untimed ones. Steps are interleaved
  round-robin over the models (``unet``, then every other model, then ``unet`` again, ...), so
  a change in machine load hits every model alike and the ratios stay meaningful on a shared
  machine;
- the peak memory of one training step (after a warm-up step, so Adam's state already exists),
  in a fresh subprocess per model and size: on CUDA ``torch.cuda.max_memory_allocated`` minus
  the memory held before the step; on CPU (Linux) the peak resident set size during the step
  (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) minus the resident size
  before it, with glibc told to hand freed blocks back at once (``MALLOC_MMAP_THRESHOLD_``,
  ``malloc_trim``) so that the resident size follows the live memory. Both count what the
  step allocates on top of the weights and Adam's state: activations, gradients, temporaries.

Every figure is also given as a ratio to ``unet`` of the same size measured in the same run.

Usage::

    python benchmarks/bench_models.py                      # all models, 96x128 and 128x128
    python benchmarks/bench_models.py --backend fused      # SDN scan backend for all SDN layers
    python benchmarks/bench_models.py --quick              # unet vs sdn_unet, 128x128, 2 steps
    python benchmarks/bench_models.py --models unet sdn_unet --sizes 128x128 --json out.json

The target of issue 4: with the fastest backend, ``sdn_unet`` at 128x128 takes at most 4x the
training-step time of ``unet``.
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
from typing import Any

import torch
import torch.nn.functional as F

try:
    import spatialrec
except ImportError:  # run from a checkout without installing: use its sources
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import spatialrec

from spatialrec.blocks import count_sdn_layers, set_sdn_backend
from spatialrec.ops import resolve_backend

BASELINE = "unet"


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 96x128 (HxW), got {text!r}") from None
    return h, w


def build(name: str, in_channels: int, num_classes: int, size: tuple[int, int], backend: str) -> torch.nn.Module:
    overrides: dict[str, Any] = {}
    if "transunet" in name:
        overrides["img_size"] = size  # position embeddings laid out for the benchmark size
    model = spatialrec.create_model(name, in_channels=in_channels, num_classes=num_classes, **overrides)
    set_sdn_backend(model, backend)
    return model


def make_batch(batch: int, in_channels: int, num_classes: int, size: tuple[int, int], device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, *size, generator=g).to(device)
    y = (torch.rand(batch, num_classes, *size, generator=g) > 0.5).float().to(device)
    return x, y


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    loss.backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def status_kib(field: str) -> int:
    """``field`` (e.g. ``VmRSS``) of ``/proc/self/status`` in KiB; ``OSError`` where it cannot be read."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``clear_refs`` 5) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> bool:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so RSS tracks live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def memory_worker(args: argparse.Namespace) -> None:
    """Subprocess: one training step of one model after a warm-up step; print its peak memory (bytes)."""
    device = torch.device(args.device)
    size = parse_size(args.worker_size)
    model = build(args.worker_model, args.in_channels, args.num_classes, size, args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = make_batch(args.batch, args.in_channels, args.num_classes, size, device)
    train_step(model, opt, x, y)  # Adam state and lazily initialised kernels exist from here on
    opt.zero_grad(set_to_none=True)  # the measured step allocates the gradients again
    sync(device)
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, opt, x, y)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    elif trim_heap() and reset_peak_rss():
        before = status_kib("VmRSS")
        train_step(model, opt, x, y)
        peak = (status_kib("VmHWM") - before) * 1024
    else:  # no way to reset the process's peak RSS here
        peak = -1
    print(json.dumps({"peak_bytes": peak}))


def measure_memory(name: str, size: tuple[int, int], args: argparse.Namespace) -> int:
    cmd = [
        sys.executable, __file__, "--worker-model", name, "--worker-size", f"{size[0]}x{size[1]}",
        "--backend", args.backend, "--device", args.device, "--batch", str(args.batch),
        "--in-channels", str(args.in_channels), "--num-classes", str(args.num_classes),
        "--threads", str(args.threads),
    ]  # fmt: skip
    # Large blocks straight from mmap: freed memory leaves the RSS at once, so the RSS peak of
    # the step is the step's own (glibc otherwise keeps freed blocks of the warm-up step).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def bench_size(names: list[str], size: tuple[int, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    x, y = make_batch(args.batch, args.in_channels, args.num_classes, size, device)
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = build(name, args.in_channels, args.num_classes, size, args.backend).to(device)
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=1e-4)
    times: dict[str, list[float]] = {n: [] for n in names}
    for it in range(args.warmup + args.iters):
        for name in names:
            sync(device)
            t0 = time.perf_counter()
            train_step(models[name], opts[name], x, y)
            sync(device)
            if it >= args.warmup:
                times[name].append(time.perf_counter() - t0)
        print(f"  {size[0]}x{size[1]} step {it + 1}/{args.warmup + args.iters} done", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        model = models[name]
        rows.append({
            "model": name,
            "size": f"{size[0]}x{size[1]}",
            "params": sum(p.numel() for p in model.parameters()),
            "sdn_layers": count_sdn_layers(model),
            "step_s": statistics.median(times[name]),
            "step_s_all": times[name],
        })  # fmt: skip
    del models, opts
    for row in rows:
        row["peak_bytes"] = measure_memory(row["model"], size, args) if not args.no_memory else -1
    base = next(r for r in rows if r["model"] == BASELINE)
    for row in rows:
        row["params_ratio"] = row["params"] / base["params"]
        row["step_ratio"] = row["step_s"] / base["step_s"]
        ok = row["peak_bytes"] > 0 and base["peak_bytes"] > 0
        row["mem_ratio"] = row["peak_bytes"] / base["peak_bytes"] if ok else float("nan")
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | size | params | x unet | SDN layers | step (s) | x unet | peak mem (MiB) | x unet |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = f"{r['peak_bytes'] / 2**20:.0f}" if r["peak_bytes"] > 0 else "n/a"
        mem_ratio = f"{r['mem_ratio']:.2f}" if r["mem_ratio"] == r["mem_ratio"] else "n/a"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.2f} M | {r['params_ratio']:.2f} | {r['sdn_layers']} "
            f"| {r['step_s']:.3f} | {r['step_ratio']:.2f} | {mem} | {mem_ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="registered names (default: all); unet is always added")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None, help="HxW sizes (default: 96x128 128x128)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=None, help="timed steps per model (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default="auto", help="SDN scan backend: auto, reference, fused, triton")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch CPU threads (on a busy shared CPU, 1 is faster and steadier)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="unet and sdn_unet at 128x128, 2 timed steps")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--worker-model", help=argparse.SUPPRESS)
    p.add_argument("--worker-size", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    resolve_backend(args.backend)

    if args.worker_model:
        memory_worker(args)
        return

    # 2D models only by default: the volumetric ones ("*3d") take (B, C, D, H, W) inputs.
    all_2d = [n for n in spatialrec.list_models() if not n.endswith("3d")]
    names = args.models or (["unet", "sdn_unet"] if args.quick else all_2d)
    names = [BASELINE] + [n for n in names if n != BASELINE]
    sizes = args.sizes or ([(128, 128)] if args.quick else [(96, 128), (128, 128)])
    if args.iters is None:
        args.iters = 2 if args.quick else 5

    probe = torch.empty(1, device=args.device)
    info = {
        "device": torch.cuda.get_device_name(probe.device) if probe.is_cuda else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "backend": args.backend,
        "backend_resolved": resolve_backend(args.backend, probe),
        "batch": args.batch,
        "iters": args.iters,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"# bench_models: {json.dumps(info)}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows += bench_size(names, size, args)
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"device={info['device']} cpus={info['cpu_count']} threads={args.threads} torch={info['torch']} "
          f"backend={args.backend} (resolved: {info['backend_resolved']}) batch={args.batch} "
          f"timed steps={args.iters} load avg start/end={info['loadavg_start']}/{info['loadavg_end']}")  # fmt: skip
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
