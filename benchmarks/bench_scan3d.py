"""Benchmark the volumetric (3D) scan backends against a naive in-place per-plane strategy.

Usage::

    python benchmarks/bench_scan3d.py                 # every 3D configuration
    python benchmarks/bench_scan3d.py --configs 32^3_S16 --repeats 5

On the same inputs and parameters of one :class:`spatialrec.SpatialDependencyLayer3d`
(project-in conv + tanh, one sweep per direction, 1x1x1 project-out conv) it measures

- ``naive``: the published 2D strategy carried to 3D: every plane is written in place into the
  state tensor (zero padding and the 9 neighbours by ``torch.cat``), autograd through all of it;
- ``reference`` and ``fused`` from :mod:`spatialrec.ops` (``triton`` on CUDA: see ``bench_scan.py``).

Figures: forward time (no grad) and forward+backward time (median of ``--repeats`` runs after
``--warmup``), and the memory autograd keeps for the backward pass (the bytes of the distinct
tensors saved by the graph, counted with ``torch.autograd.graph.saved_tensors_hooks``; on CUDA
also the peak of ``max_memory_allocated``). Every figure is also printed as a ratio to ``naive``
measured in the same run: the machines are shared and noisy, ratios are what compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

CONFIGS_3D: dict[str, dict] = {
    "64^3_S32": dict(batch=1, channels=32, state=32, depth=64, height=64, width=64, directions=["right", "down", "in"]),
    "32^3_S16": dict(batch=1, channels=16, state=16, depth=32, height=32, width=32, directions=["right", "down", "in"]),
    "48x96x96_S32": dict(batch=1, channels=32, state=32, depth=48, height=96, width=96, directions=["in"]),
}
"""3D layer configurations: a 64^3 patch at S=32 (the issue's), a small one for quick runs on a
CPU, and an anisotropic CT-like slab swept along D only."""

BACKENDS_3D_BENCH: tuple[str, ...] = ("naive", "reference", "fused")


def naive_sweep3d(
    h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, direction: str
) -> torch.Tensor:
    """One 3D sweep written the way the published 2D code writes a 2D one: ``(B, S, D, H, W)`` -> same.

    The state is cloned once and every plane is overwritten in place with its update; the 9
    neighbours are gathered with ``torch.cat`` of zero-padded shifted copies.
    """
    from spatialrec.ops import from_canonical_view, to_canonical_view

    state = to_canonical_view(h, direction).clone()
    b, s, n_planes, na, nb = state.shape
    for t in range(1, n_planes):
        prev = F.pad(state[:, :, t - 1], (1, 1, 1, 1))
        a = torch.cat([prev[:, :, 1 + da : 1 + da + na, 1 + db : 1 + db + nb] for da in (-1, 0, 1) for db in (-1, 0, 1)], 1)
        a = a.permute(0, 2, 3, 1).reshape(b * na * nb, 9 * s)
        # A copy: a view of the state would be invalidated by the next plane's in-place write.
        p = state[:, :, t].permute(0, 2, 3, 1).reshape(b * na * nb, s).clone()
        gi = F.linear(a, w_ih, b_ih)
        gh = F.linear(p, w_hh, b_hh)
        r = torch.sigmoid(gi[:, :s] + gh[:, :s])
        z = torch.sigmoid(gi[:, s : 2 * s] + gh[:, s : 2 * s])
        n = torch.tanh(gi[:, 2 * s :] + r * gh[:, 2 * s :])
        new = z * n + (1 - z) * p
        state[:, :, t] = new.reshape(b, na, nb, s).permute(0, 3, 1, 2)
    return from_canonical_view(state, direction)


def layer_forward3d(layer: torch.nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    """The 3D SDN layer's forward with the given backend (``naive`` = :func:`naive_sweep3d`)."""
    if backend != "naive":
        layer.backend = backend
        return layer(x)
    h = torch.tanh(layer.project_in(x))
    for sweep in layer.sweeps:
        h = naive_sweep3d(h, sweep.weight_ih, sweep.weight_hh, sweep.bias_ih, sweep.bias_hh, sweep.direction)
    return layer.project_out(h)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensor storages the autograd graph of ``fn()`` keeps for backward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def run_config3d(name: str, cfg: dict, device: torch.device, backends: list[str], warmup: int, repeats: int) -> dict:
    """Measure every backend on one configuration; returns a JSON-able dict of figures."""
    from spatialrec import SpatialDependencyLayer3d

    torch.manual_seed(0)
    layer = SpatialDependencyLayer3d(cfg["channels"], cfg["channels"], cfg["state"], cfg["directions"]).to(device)
    x = torch.randn(cfg["batch"], cfg["channels"], cfg["depth"], cfg["height"], cfg["width"], device=device)
    results: dict[str, dict] = {}
    reference_out: Optional[torch.Tensor] = None
    for backend in backends:

        def fwd() -> None:
            with torch.no_grad():
                layer_forward3d(layer, x, backend)

        def fwd_bwd() -> None:
            layer.zero_grad(set_to_none=True)
            layer_forward3d(layer, x, backend).square().mean().backward()

        with torch.no_grad():
            out = layer_forward3d(layer, x, backend)
        if reference_out is None:
            reference_out = out
        max_diff = float((out - reference_out).abs().max())
        entry = {
            "forward_s": _median_time(fwd, device, warmup, repeats),
            "forward_backward_s": _median_time(fwd_bwd, device, warmup, repeats),
            "saved_for_backward_bytes": saved_bytes(lambda: layer_forward3d(layer, x, backend)),
            "max_abs_diff_vs_first": max_diff,
        }
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fwd_bwd()
            _sync(device)
            entry["cuda_peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - base
        results[backend] = entry
    return {"name": name, "config": cfg, "device": str(device), "threads": torch.get_num_threads(), "results": results}


def print_result3d(res: dict) -> None:
    """Print one configuration's figures with ratios to the first backend (``naive`` by default)."""
    cfg = res["config"]
    dims = f"{cfg['depth']}x{cfg['height']}x{cfg['width']}"
    print(
        f"\n== {res['name']}: B={cfg['batch']} C={cfg['channels']} S={cfg['state']} {dims} "
        f"dirs={','.join(cfg['directions'])} on {res['device']} ({res['threads']} threads)"
    )
    rows = res["results"]
    base_name = next(iter(rows))
    base = rows[base_name]
    print(f"{'backend':<10} {'fwd ms':>9} {'x':>6} {'fwd+bwd ms':>11} {'x':>6} {'saved MB':>9} {'x':>6} {'max|diff|':>10}")
    for name, r in rows.items():
        print(
            f"{name:<10} {r['forward_s'] * 1e3:9.1f} {base['forward_s'] / r['forward_s']:6.2f} "
            f"{r['forward_backward_s'] * 1e3:11.1f} {base['forward_backward_s'] / r['forward_backward_s']:6.2f} "
            f"{r['saved_for_backward_bytes'] / 2**20:9.1f} "
            f"{r['saved_for_backward_bytes'] / max(base['saved_for_backward_bytes'], 1):6.2f} "
            f"{r['max_abs_diff_vs_first']:10.2e}"
        )
        if "cuda_peak_extra_bytes" in r:
            print(f"{'':<10} CUDA peak extra {r['cuda_peak_extra_bytes'] / 2**20:.1f} MB")
    print(f"(x = speed-up, or memory fraction, relative to {base_name!r} in this run)")


# --------------------------------------------------------------------------------------------
# The 3D configurations of benchmarks/bench_scan.py (same figures and schema as its 2D rows).
# --------------------------------------------------------------------------------------------
def _plane_dims(cfg: dict, direction: str) -> tuple[int, int]:
    """``(planes, voxels per plane)`` of a sweep in ``direction`` over the configuration's volume."""
    d, h, w = cfg["depth"], cfg["height"], cfg["width"]
    length = {"in": d, "out": d, "down": h, "up": h, "right": w, "left": w}[direction]
    return length, d * h * w // length


def scan_flops3d(cfg: dict) -> float:
    """Useful FLOPs of the 3D sweeps' forward: per direction, 2*(L-1)*B*(plane)*(27S^2 + 3S^2)."""
    b, s = cfg["batch"], cfg["state"]
    total = 0.0
    for direction in cfg["directions"]:
        length, plane = _plane_dims(cfg, direction)
        total += 2.0 * (length - 1) * b * plane * 30 * s * s
    return total


def layer_flops3d(cfg: dict) -> float:
    """Useful FLOPs of the 3D layer's forward: the sweeps, the 3x3x3 project-in and 1x1x1 project-out."""
    b, s, c = cfg["batch"], cfg["state"], cfg["channels"]
    voxels = cfg["depth"] * cfg["height"] * cfg["width"]
    return scan_flops3d(cfg) + 2.0 * b * voxels * (s * c * 27 + c * s)


def gemm_only3d(cfg: dict, device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    """The GEMMs of the 3D sweeps' forward alone (per plane ``(B*plane, 9S) x (9S, 3S)``, and the
    prior term ``(L*B*plane, S) x (S, 3S)`` per direction), into preallocated outputs."""
    b, s = cfg["batch"], cfg["state"]
    work = []
    for direction in cfg["directions"]:
        length, plane = _plane_dims(cfg, direction)
        m = b * plane
        a = torch.randn(m, 9 * s, device=device, dtype=dtype)
        wt = torch.randn(9 * s, 3 * s, device=device, dtype=dtype)
        out = torch.empty(m, 3 * s, device=device, dtype=dtype)
        xp = torch.randn(length * m, s, device=device, dtype=dtype)
        wh = torch.randn(s, 3 * s, device=device, dtype=dtype)
        outp = torch.empty(length * m, 3 * s, device=device, dtype=dtype)
        work.append((length, a, wt, out, xp, wh, outp))

    def run() -> None:
        for length, a, wt, out, xp, wh, outp in work:
            torch.mm(xp, wh, out=outp)
            for _ in range(length - 1):
                torch.mm(a, wt, out=out)

    return run


def bench_scan_parts3d(
    cfg: dict, device: torch.device
) -> tuple[torch.nn.Module, torch.Tensor, float, float, Callable[[], None], Callable[..., torch.Tensor]]:
    """What ``bench_scan.py`` needs to time a 3D configuration with its own 2D machinery:
    ``(layer, x, layer FLOPs, sweep FLOPs, GEMM-ceiling function, forward(layer, x, backend))``."""
    from spatialrec import SpatialDependencyLayer3d

    layer = SpatialDependencyLayer3d(cfg["channels"], cfg["channels"], cfg["state"], cfg["directions"]).to(device)
    x = torch.randn(cfg["batch"], cfg["channels"], cfg["depth"], cfg["height"], cfg["width"], device=device)
    return layer, x, layer_flops3d(cfg), scan_flops3d(cfg), gemm_only3d(cfg, device, torch.float32), layer_forward3d


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS_3D), help="configurations (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS_3D_BENCH), choices=BACKENDS_3D_BENCH)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    all_results = []
    for name in args.configs or list(CONFIGS_3D):
        res = run_config3d(name, CONFIGS_3D[name], device, args.backends, args.warmup, args.repeats)
        print_result3d(res)
        all_results.append(res)
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
