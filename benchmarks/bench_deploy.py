"""Deployment speed of SDN models: eager vs torch.compile vs onnxruntime, eval, float32, CPU.

Per size, the eval forward (batch 1) of eager, ``torch.compile(fullgraph=True, dynamic=True)`` and
onnxruntime, timed round-robin (one call of each per round, median over the rounds) so that a
change of load on a shared machine hits all three alike; every figure is also given as a ratio to
eager. With ``--train``, also one training step (forward + backward, batch 2) eager against
:func:`spatialrec.export.compile_dynamic`, whose one graph serves every size. Reports the cold
compile times (first call, inductor caches disabled) and the ONNX node count at two export sizes
(it must not grow with the size).

    PYTHONPATH=src python benchmarks/bench_deploy.py --sizes 128 256 --repeats 5 --threads 1 --train
    python benchmarks/bench_deploy.py --model sdn_unet sdn_unet_pp sdn_transunet --no-onnx --train
    python benchmarks/bench_deploy.py --model sdn_unet3d --sizes 32 48 --no-onnx --train

``--model`` takes several names (one after the other, in one process). A 3D model (``sdn_unet3d``)
gets cubes: a size ``n`` is an ``n x n x n`` volume.

One thread is the default: with two threads on a shared 2-core machine every small operation waits
at an OpenMP barrier for a descheduled thread, which made the same forward 2-8x slower from one
run to the next (docs/kernels.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")  # cold compile times
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch

from spatialrec import create_model
from spatialrec.export import compile_dynamic
from spatialrec.models import model_spatial_dims


def _input(model: torch.nn.Module, dims: int, batch: int, size: int, other: int | None = None) -> torch.Tensor:
    """A batch of ``size x other`` images, or of ``size``-cubes for a 3D model (``other`` ignored)."""
    if dims == 3:
        return torch.randn(batch, model.in_channels, size, size, size)
    return torch.randn(batch, model.in_channels, size, size if other is None else other)


def _label(dims: int, size: int) -> str:
    return f"{size}^3" if dims == 3 else f"{size}x{size}"


def _round_robin(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, called in turn ``repeats`` times after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _cold(label: str, fn: Callable[[], object]) -> None:
    t = time.perf_counter()
    fn()
    print(f"cold compile ({label}): {time.perf_counter() - t:.1f} s", flush=True)


def _eval_rows(model: torch.nn.Module, dims: int, sizes: list[int], repeats: int, threads: int, onnx: bool) -> None:
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch.no_grad():
        _cold(f"eval forward, fullgraph, dynamic, first call at {sizes[0]}", lambda: compiled(_input(model, dims, 1, sizes[0])))
    session = None
    if onnx and dims == 2:
        import onnxruntime as ort

        from spatialrec.export import count_onnx_nodes, to_onnx

        tmp = tempfile.mkdtemp()
        for size in (32, 64):
            path = os.path.join(tmp, f"m{size}.onnx")
            t = time.perf_counter()
            to_onnx(model, torch.randn(2, model.in_channels, size, size), path)
            print(f"ONNX export at {size}x{size}: {time.perf_counter() - t:.1f} s, {count_onnx_nodes(path)} nodes")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    print(f"eval, batch 1: {'size':>9} {'eager ms':>9} {'compiled ms':>12} {'ratio':>6} {'ort ms':>8} {'ratio':>6}")
    with torch.no_grad():
        for size in sizes:
            x = _input(model, dims, 1, size)
            fns: dict[str, Callable[[], object]] = {"eager": lambda x=x: model(x), "compiled": lambda x=x: compiled(x)}
            if session is not None:
                feed = {"input": x.numpy()}
                fns["ort"] = lambda s=session, feed=feed: s.run(None, feed)
            t = _round_robin(fns, repeats)
            line = f"{'':14}{_label(dims, size):>9} {t['eager'] * 1e3:9.1f} {t['compiled'] * 1e3:12.1f} {t['eager'] / t['compiled']:6.2f}"
            if session is not None:
                err = abs(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]) - model(x)).max().item()
                line += f" {t['ort'] * 1e3:8.1f} {t['eager'] / t['ort']:6.2f}  (ort max |diff| {err:.1e})"
            print(line, flush=True)


def _train_rows(model: torch.nn.Module, dims: int, sizes: list[int], repeats: int) -> None:
    model.train()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = compile_dynamic(model)

    def step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
        model.zero_grad(set_to_none=True)
        fn(x).square().mean().backward()

    first = _input(model, dims, 2, sizes[0], sizes[0] + 16)  # not square: one symbol per side
    _cold("training step, compile_dynamic, fwd + bwd", lambda: step(compiled, first))
    print(f"train, batch 2: {'size':>8} {'eager ms':>9} {'compiled ms':>12} {'ratio':>6}")
    for size in sizes:
        x = _input(model, dims, 2, size)
        t = _round_robin({"eager": lambda x=x: step(model, x), "compiled": lambda x=x: step(compiled, x)}, repeats)
        print(f"{'':15}{_label(dims, size):>9} {t['eager'] * 1e3:9.1f} {t['compiled'] * 1e3:12.1f} {t['eager'] / t['compiled']:6.2f}", flush=True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    print(f"graphs captured for training at {len(sizes) + 1} sizes: {graphs}")
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["sdn_unet"], help="model names (spatialrec.list_models())")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--train", action="store_true", help="also time a training step, eager vs compile_dynamic")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.model:
        torch.manual_seed(0)
        model = create_model(name).eval()
        dims = model_spatial_dims(name) or 2
        print(f"\n{name}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.repeats} round-robin rounds", flush=True)
        _eval_rows(model, dims, args.sizes, args.repeats, args.threads, not args.no_onnx)
        if args.train:
            _train_rows(model, dims, args.sizes, args.repeats)


if __name__ == "__main__":
    main()
