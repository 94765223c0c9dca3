"""fit takes volume items (C, D, H, W) for 3D models, and rejects image/mask rank mismatches."""

from __future__ import annotations

import pytest
import torch

from spatialrec.data.patches3d import RandomPatchDataset3d
from spatialrec.models import UNet3d
from spatialrec.train import fit


def _volumes() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(2):
        mask = torch.zeros(1, 9, 10, 11)
        mask[:, 2:6, 3:7, 4:8] = 1
        out.append({"image": mask + 0.3 * torch.randn(1, 9, 10, 11, generator=g), "mask": mask, "id": f"v{i}"})
    return out


def test_fit_trains_a_3d_model_on_patches(tmp_path) -> None:
    torch.manual_seed(0)
    train = RandomPatchDataset3d(_volumes(), 8, samples_per_volume=2, foreground_ratio=1.0)
    val = RandomPatchDataset3d(_volumes(), 8, samples_per_volume=1, seed=1)
    model = UNet3d(1, 1, depth=2, base_width=4, encoder_sdn=(2,), state_size=3)
    result = fit(model, train, val, epochs=2, batch_size=2, device="cpu", out_dir=tmp_path, progress=False,
                 on_epoch_end=lambda row: train.set_epoch(int(row["epoch"])))  # fmt: skip
    assert result.epochs_completed == 2 and train.epoch == 2
    assert (tmp_path / "best.pt").is_file()


def test_fit_rejects_mixed_ranks(tmp_path) -> None:
    bad = [{"image": torch.zeros(1, 8, 8, 8), "mask": torch.zeros(1, 8, 8), "id": "x"}]
    model = UNet3d(1, 1, depth=1, base_width=2)
    with pytest.raises(ValueError, match="same number of dims"):
        fit(model, bad, bad, epochs=1, device="cpu", out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(C, D, H, W\)"):
        fit(model, [{"image": torch.zeros(8, 8), "mask": torch.zeros(1, 8, 8)}], bad, epochs=1, device="cpu",
            out_dir=tmp_path, progress=False)  # fmt: skip
