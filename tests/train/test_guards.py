"""fit stops early on what would make a run meaningless: non-binary masks, non-finite weights or buffers."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialrec.train import fit
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
