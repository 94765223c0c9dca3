"""Trains the tiny problem of test_distributed.py; run directly (1 process) or under torchrun (2).

Usage: python ddp_worker.py OUT_DIR BATCH_SIZE_PER_PROCESS
"""

import sys

import torch

from spatialrec.train import fit
from tests.train.helpers import TinySegmentation, soft_dice_loss, tiny_model

if __name__ == "__main__":
    out_dir, batch_size = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    # 16 training images: 2 steps of a global batch of 8; 7 validation and 5 test images: uneven shards.
    fit(
        tiny_model(width=6, seed=0),
        TinySegmentation(16, size=10, seed=1),
        TinySegmentation(7, size=10, seed=2),
        test_data=TinySegmentation(5, size=10, seed=3),
        loss_fn=soft_dice_loss,
        epochs=3,
        batch_size=batch_size,
        lr=2e-2,
        device="cpu",
        seed=5,
        out_dir=out_dir,
        progress=False,
    )
