"""fit stops early on what would make a run meaningless: non-binary masks, non-finite weights or buffers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from spatialrec.train import NonFiniteLossError, NonFiniteStateError, TrainingDivergedError, fit, load_checkpoint
from .helpers import TinySegmentation, soft_dice_loss, tiny_model

COMMON = dict(loss_fn=soft_dice_loss, device="cpu", progress=False, hd95=False, batch_size=4)


class Scaled(TinySegmentation):
    """TinySegmentation with masks mapped by ``mask * scale + offset`` (e.g. 0/255 PNG masks)."""

    def __init__(self, n: int, scale: float = 1.0, offset: float = 0.0, **kw) -> None:
        super().__init__(n, **kw)
        self.masks = self.masks * scale + offset


@pytest.mark.parametrize("scale,offset,shown", [(255.0, 0.0, r"\[0, 255\]"), (2.0, -1.0, r"\[-1, 1\]")])
def test_non_binary_masks_are_refused_on_the_first_batch(tmp_path: Path, scale: float, offset: float, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"mask.*{shown}.*\[0, 1\]"):
        fit(tiny_model(), Scaled(8, scale, offset), TinySegmentation(4), epochs=1, out_dir=tmp_path, **COMMON)
    assert not (tmp_path / "last.pt").exists()  # refused before any step


def test_nan_in_masks_is_refused() -> None:
    train = TinySegmentation(8)
    train.masks[:, :, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="mask.*NaN"):
        fit(tiny_model(), train, TinySegmentation(4), epochs=1, **COMMON)


def test_soft_masks_in_0_1_are_accepted() -> None:
    res = fit(tiny_model(), Scaled(8, 0.8, 0.1), TinySegmentation(4), epochs=1, **COMMON)
    assert res.epochs_completed == 1
def _bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


class Blowup(TinySegmentation):
    """TinySegmentation whose images are multiplied by ``scale`` (raised between epochs)."""

    scale = 1.0

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["image"] = item["image"] * self.scale
        return item


def test_diverged_batchnorm_statistics_stop_the_run_and_keep_the_checkpoint(tmp_path: Path) -> None:
    """BatchNorm's running variance overflows to inf while the loss stays finite (normalising by
    an infinite variance gives zeros): without a check the run ends as if nothing happened, with
    inf in last.pt and best.pt (what a learning rate of 1e20 does; here epoch 2's inputs blow up
    so that epoch 1 leaves a good checkpoint)."""
    train = Blowup(8)

    def blow_up(row: dict) -> None:
        train.scale = 1e25

    with pytest.raises(NonFiniteStateError, match=r"epoch 2 \(1\.running_var\).*last\.pt") as info:
        fit(_bn_model(), train, TinySegmentation(4), epochs=4, lr=1e-3, out_dir=tmp_path, on_epoch_end=blow_up,
            **COMMON)  # fmt: skip
    err = info.value
    assert isinstance(err, TrainingDivergedError) and not isinstance(err, NonFiniteLossError)
    assert err.epoch == 2 and err.names == ["1.running_var"] and err.checkpoint == tmp_path / "last.pt"
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(tmp_path / name)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_huge_learning_rate_stops_in_the_first_epoch_with_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteStateError, match=r"epoch 1 .*running_var.*no checkpoint"):
        fit(_bn_model(), TinySegmentation(8), TinySegmentation(4), epochs=3, lr=1e20, out_dir=tmp_path, **COMMON)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
