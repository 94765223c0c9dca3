"""Deployment speed of ``sdn_unet``: eager vs torch.compile vs onnxruntime, eval, float32, CPU.

Every figure is also given as a ratio to eager in the same run. Also reports the cold compile
time (first call of the compiled model, fresh process caches disabled) and the ONNX node count at
two export sizes (it must not grow with the size).

    PYTHONPATH=src python benchmarks/bench_deploy.py --sizes 128 256 --repeats 5

Numbers on a shared CPU are noisy: compare ratios, and rerun before drawing conclusions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")  # cold compile times
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch  # noqa: E402

from spatialrec import create_model  # noqa: E402


def _time(fn, x, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sdn_unet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    print(f"{args.model}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads, batch 1, float32, median of {args.repeats}")

    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    first = torch.randn(1, model.in_channels, args.sizes[0], args.sizes[0])
    with torch.no_grad():
        t = time.perf_counter()
        compiled(first)
        print(f"cold compile (fullgraph, dynamic, first call at {args.sizes[0]}): {time.perf_counter() - t:.1f} s")

    sessions = {}
    if not args.no_onnx:
        import onnxruntime as ort

        from spatialrec.export import count_onnx_nodes, to_onnx

        tmp = tempfile.mkdtemp()
        for size in (32, 64):
            path = os.path.join(tmp, f"m{size}.onnx")
            t = time.perf_counter()
            to_onnx(model, torch.randn(2, model.in_channels, size, size), path)
            print(f"ONNX export at {size}x{size}: {time.perf_counter() - t:.1f} s, {count_onnx_nodes(path)} nodes")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sessions["ort"] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    print(f"{'size':>9} {'eager ms':>9} {'compiled ms':>12} {'ratio':>6} {'ort ms':>8} {'ratio':>6}")
    with torch.no_grad():
        for size in args.sizes:
            x = torch.randn(1, model.in_channels, size, size)
            eager = _time(model, x, args.repeats)
            comp = _time(compiled, x, args.repeats)
            line = f"{size:>4}x{size:<4} {eager * 1e3:9.1f} {comp * 1e3:12.1f} {eager / comp:6.2f}"
            if "ort" in sessions:
                s = sessions["ort"]
                feed = {"input": x.numpy()}
                ort_t = _time(lambda _: s.run(None, feed), None, args.repeats)
                err = abs(torch.from_numpy(s.run(None, feed)[0]) - model(x)).max().item()
                line += f" {ort_t * 1e3:8.1f} {eager / ort_t:6.2f}  (ort max |diff| {err:.1e})"
            print(line)


if __name__ == "__main__":
    main()
