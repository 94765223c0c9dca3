"""Trains the tiny problem of test_distributed.py; run directly (1 process) or under torchrun (2).

Usage: python ddp_worker.py OUT_DIR BATCH_SIZE_PER_PROCESS [MODE]

MODE ``masks255``: rank 1's training masks are 0/255 (rank 0's are fine); ``diverge``: a BatchNorm
model with a learning rate of 1e20. Both must stop every process with the same error.
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

from spatialrec.train import fit
from tests.train.helpers import TinySegmentation, soft_dice_loss, tiny_model


class RankScaledMasks(TinySegmentation):
    """Masks times 255 in rank 1 only: rank 0's own batch passes the check, the agreed result must not."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if dist.is_initialized() and dist.get_rank() == 1:
            item["mask"] = item["mask"] * 255
        return item


if __name__ == "__main__":
    out_dir, batch_size = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "train"
    torch.set_num_threads(1)
    model, lr, train = tiny_model(width=6, seed=0), 2e-2, TinySegmentation(16, size=10, seed=1)
    if mode == "masks255":
        train = RankScaledMasks(16, size=10, seed=1)
    elif mode == "diverge":
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
        lr = 1e20
    # 16 training images: 2 steps of a global batch of 8; 7 validation and 5 test images: uneven shards.
    fit(
        model,
        train,
        TinySegmentation(7, size=10, seed=2),
        test_data=TinySegmentation(5, size=10, seed=3),
        loss_fn=soft_dice_loss,
        epochs=3,
        batch_size=batch_size,
        lr=lr,
        device="cpu",
        seed=5,
        out_dir=out_dir,
        progress=False,
    )
