"""evaluate(): per-image Dice / IoU / HD95 against hand computations, spacing, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from spatialrec.train import evaluate


class Threshold(nn.Module):
    """Logits ``10 * (image[:K] - 0.5)``: the prediction of class k is ``image[k] > 0.5``."""

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * (x[:, : self.classes] - 0.5) + 0 * self.dummy


class Boxes(Dataset):
    """Image: one box per class; mask: the same box shifted by ``shift`` columns (or empty)."""

    def __init__(self, cases: list[dict]) -> None:
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict:
        c = self.cases[i]
        k = len(c["boxes"])
        image = torch.zeros(k, 16, 20)
        mask = torch.zeros(k, 16, 20)
        for j, (pred_box, true_box) in enumerate(c["boxes"]):
            if pred_box:
                r0, r1, c0, c1 = pred_box
                image[j, r0:r1, c0:c1] = 1
            if true_box:
                r0, r1, c0, c1 = true_box
                mask[j, r0:r1, c0:c1] = 1
        item = {"image": image, "mask": mask, "id": c["id"]}
        if "spacing" in c:
            item["spacing"] = torch.tensor(c["spacing"], dtype=torch.float32)
        return item


def _box_dice(a, b) -> float:
    def area(x):
        return 0 if not x else (x[1] - x[0]) * (x[3] - x[2])

    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))
    return 2 * inter / (area(a) + area(b))


def test_evaluate_matches_hand_computed_dice_and_hd95() -> None:
    cases = [
        {"id": "same", "boxes": [((2, 8, 2, 8), (2, 8, 2, 8)), ((1, 4, 1, 4), (1, 4, 1, 4))]},
        {"id": "shift3", "boxes": [((2, 8, 2, 8), (2, 8, 5, 11)), ((1, 4, 1, 4), (1, 4, 2, 5))]},
        {"id": "missed", "boxes": [(None, (4, 9, 4, 9)), ((5, 9, 5, 9), (5, 9, 5, 9))]},
        {"id": "empty", "boxes": [(None, None), ((0, 3, 0, 3), (1, 4, 0, 3))]},
    ]
    res = evaluate(Threshold(2), Boxes(cases), batch_size=3, device="cpu", class_names=["a", "b"])
    assert res["num_cases"] == 4
    assert [r["id"] for r in res["per_case"]] == ["same", "shift3", "missed", "empty"]
    for row, case in zip(res["per_case"], cases):
        for k, (p, t) in enumerate(case["boxes"]):
            assert row["dice"][k] == pytest.approx(_box_dice(p, t), abs=1e-6)
    # Class a: dice (1 + 1/2 + 0 + 1) / 4; HD95 finite for 'same' (0) and 'shift3' (3 px).
    assert res["dice"]["per_class"]["a"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert res["hd95"]["per_class"]["a"] == pytest.approx(1.5)
    assert res["hd95"]["infinite"] == 1 and res["hd95"]["undefined"] == 1
    # IoU of the shifted box: 3x6 overlap of two 6x6 boxes -> 18 / 54.
    assert res["per_case"][1]["iou"][0] == pytest.approx(18 / 54)
    assert res["dice"]["mean"] == pytest.approx(np.mean(list(res["dice"]["per_class"].values())))


def test_evaluate_uses_each_images_spacing_for_hd95() -> None:
    box = ((2, 8, 2, 8), (2, 8, 5, 11))  # 3 columns apart
    cases = [{"id": "a", "boxes": [box], "spacing": (1.0, 1.0)}, {"id": "b", "boxes": [box], "spacing": (0.5, 2.0)}]
    res = evaluate(Threshold(1), Boxes(cases), batch_size=2, device="cpu")
    assert [r["hd95"][0] for r in res["per_case"]] == pytest.approx([3.0, 6.0])


def test_evaluate_loss_and_model_mode_restored() -> None:
    model = Threshold(1)
    model.train()
    cases = [{"id": "x", "boxes": [((2, 8, 2, 8), (2, 8, 2, 8))]}]
    res = evaluate(model, Boxes(cases), device="cpu", loss_fn=lambda lg, t: (lg - t).abs().mean(), hd95=False)
    assert model.training
    assert "hd95" not in res and math.isfinite(res["loss"])


def test_fit_validation_dice_equals_metrics_dice() -> None:
    """The loop's own per-image Dice (progress bar, CSV) follows spatialrec.metrics.dice."""
    from spatialrec import metrics
    from spatialrec.train.steps import hard_dice_sums

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 9, 7, generator=g)
    target = (torch.rand(5, 3, 9, 7, generator=g) > 0.6).float()
    target[0, 1] = 0
    logits[0, 1] = -5  # both empty
    logits[1, 2] = -5  # prediction empty
    total, n = hard_dice_sums(logits, target, 0.5)
    expected = metrics.dice(torch.sigmoid(logits) > 0.5, target > 0.5).mean(dim=1).sum()
    assert n == 5 and total == pytest.approx(float(expected), rel=1e-6)
