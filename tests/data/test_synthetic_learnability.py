"""Slow: the synthetic set does what it is for. A small U-Net whose receptive field does not reach
the cue plateaus at marking every object (Dice ~2/3); the same U-Net with a global-context branch at
its bottleneck (it sees the cue) solves it within a few hundred steps."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spatialrec import SpatialDependencyLayer
from spatialrec.data import synthetic_splits
from spatialrec.losses import DiceLoss
from spatialrec.metrics import dice, to_masks


def _block(i: int, o: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
        nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
    )  # fmt: skip


class _TinyUNet(nn.Module):
    """Two poolings (receptive field ~40 px < the 32 px cue distance on each side), widths 8/16/32."""

    def __init__(self, context: str = "none") -> None:
        super().__init__()
        self.e1, self.e2, self.b = _block(1, 8), _block(8, 16), _block(16, 32)
        self.context = context
        if context == "sdn":
            self.ctx: Optional[nn.Module] = SpatialDependencyLayer(32, 32, state_size=16)
        elif context == "global":
            self.ctx = nn.Conv2d(32, 32, 1)  # applied to the image-wide mean of the bottleneck
        else:
            self.ctx = None
        self.d2, self.d1, self.out = _block(48, 16), _block(24, 8), nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(F.max_pool2d(a, 2))
        c = self.b(F.max_pool2d(b, 2))
        if self.context == "sdn":
            c = c + self.ctx(c)
        elif self.context == "global":
            c = c + self.ctx(c.mean((2, 3), keepdim=True))
        d = self.d2(torch.cat([b, F.interpolate(c, scale_factor=2, mode="bilinear")], 1))
        return self.out(self.d1(torch.cat([a, F.interpolate(d, scale_factor=2, mode="bilinear")], 1)))


def _train_and_test(context: str, steps: int) -> float:
    torch.manual_seed(0)
    train, _, test = synthetic_splits(2000, 8, 64, seed=0, image_size=64)
    net = _TinyUNet(context)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    loss_fn = DiceLoss()
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    step = 0
    while step < steps:
        for batch in loader:
            net.train()
            loss = loss_fn(net(batch["image"]), batch["mask"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    net.eval()
    x = torch.stack([test[i]["image"] for i in range(len(test))])
    y = torch.stack([test[i]["mask"] for i in range(len(test))])
    with torch.no_grad():
        return dice(to_masks(net(x)), y).mean().item()


@pytest.mark.slow
def test_local_unet_cannot_global_context_can():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is as fast and does not fight other jobs
    try:
        assert _train_and_test("none", steps=200) < 0.75
        assert _train_and_test("global", steps=350) > 0.9
    finally:
        torch.set_num_threads(threads)
