"""Build an SDN layer, run it forward and backward on random data, and report what it did.

    python examples/sdn_quickstart.py --height 48 --width 64
"""

from __future__ import annotations

import argparse
import time

import torch

import spatialrec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--state-size", type=int, default=32)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--backend", default="auto", help="reference, fused, triton or auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    layer = spatialrec.ResidualSDN(args.channels, args.channels, state_size=args.state_size, backend=args.backend)
    x = torch.randn(args.batch_size, args.channels, args.height, args.width, requires_grad=True)
    print(layer)

    start = time.perf_counter()
    y = layer(x)
    # The gradient of one bottom-right output pixel reaches the whole image: right then down
    # makes every pixel depend on everything above it and to its left.
    y[:, :, -1, -1].sum().backward()
    elapsed = time.perf_counter() - start
    reach = (x.grad.abs().sum(dim=(0, 1)) > 0).float().mean().item()
    print(f"input {tuple(x.shape)} -> output {tuple(y.shape)} in {elapsed * 1000:.0f} ms (forward+backward)")
    print(f"one output pixel depends on {reach:.0%} of the input pixels")


if __name__ == "__main__":
    main()
