"""Time one SDN layer's forward+backward: a quick probe for A/B runs across commits or options.

Prints the median milliseconds of one ``SpatialDependencyLayer`` forward+backward (``sum()`` as
the loss) after two warm-up steps, and nothing else, so that a shell loop can alternate
processes, e.g. this commit against an older one checked out in a worktree::

    git worktree add /tmp/before <commit>
    for round in 1 2; do
      for tree in /tmp/before .; do
        OMP_NUM_THREADS=1 PYTHONPATH=$tree/src taskset -c 0 python benchmarks/bench_layer.py b1_512 --threads 1
      done
    done

(``docs/kernels.md``, "The native pass on torch's threads", was measured this way; its raw output
is ``benchmarks/results/native_threads_ab.txt``.) For the full picture of a configuration (the
GEMM ceiling, every backend, peak memory) use ``bench_scan.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# name -> (batch, channels, state size, height = width, directions, timed steps). Default cell.
LAYERS: dict[str, tuple[int, int, int, int, tuple[str, ...], int]] = {
    "small": (8, 32, 26, 24, ("right", "down", "left", "up"), 30),  # bench_holistic's SDN level at 96 x 96
    "b1_512": (1, 32, 32, 512, ("right", "down"), 4),
    "b2_256": (2, 32, 64, 256, ("right", "down"), 4),
    "paper": (4, 32, 150, 128, ("right", "down"), 3),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layer", choices=sorted(LAYERS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--cpu-kernel", choices=("auto", "native", "torch"), default=None,
                        help="spatialrec's cpu_kernel option (default: its own default)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: per layer)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from spatialrec import SpatialDependencyLayer, options

    if args.cpu_kernel is not None:
        options.set_cpu_kernel(args.cpu_kernel)
    batch, channels, state, side, directions, steps = LAYERS[args.layer]
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(channels, channels, state, directions)
    x = torch.randn(batch, channels, side, side, requires_grad=True)
    for _ in range(2):
        layer(x).sum().backward()
    times = []
    for _ in range(args.steps or steps):
        start = time.perf_counter()
        layer(x).sum().backward()
        times.append(time.perf_counter() - start)
    print(f"{statistics.median(times) * 1e3:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
