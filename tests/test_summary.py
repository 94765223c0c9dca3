"""One summary format: hand-made statistics, and the 2D and 3D evaluation paths giving the same result."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from spatialrec.inference import evaluate_volumes
from spatialrec.summary import SUMMARY_FORMAT, case_metrics, case_rows, format_table, json_safe, metric_summary, summarise
from spatialrec.train import evaluate

INF, NAN = math.inf, math.nan


class Threshold(nn.Module):
    """Logits ``10 * (x - 0.5)``: the prediction is the image itself (a 0/1 mask), in 2D or 3D."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * (x - 0.5) + 0 * self.dummy


def _cases(spatial: tuple[int, ...]) -> list[dict]:
    """Four cases, two classes: hit, shifted, missed (empty prediction), hallucinated (empty target).

    Class 1 of the last case is empty in both (HD95 undefined).
    """
    def box(lo: int, hi: int) -> torch.Tensor:
        m = torch.zeros(spatial)
        m[(slice(lo, hi),) * len(spatial)] = 1
        return m

    empty = torch.zeros(spatial)
    pairs = [
        ((box(1, 5), box(1, 5)), (box(2, 4), box(2, 4))),
        ((box(1, 5), box(2, 6)), (box(2, 4), box(3, 5))),
        ((empty, box(1, 5)), (box(2, 4), box(2, 4))),
        ((box(1, 5), empty), (empty, empty)),
    ]
    out = []
    for i, classes in enumerate(pairs):
        image = torch.stack([p for p, _ in classes])
        mask = torch.stack([t for _, t in classes])
        out.append({"image": image, "mask": mask, "id": f"case{i}", "spacing": torch.tensor([2.0] * len(spatial))})
    return out


def test_metric_summary_by_hand() -> None:
    # class a: 1, 3, inf (missed), nan (both empty); class b: 2, 2, 2, inf
    values = torch.tensor([[1.0, 2.0], [3.0, 2.0], [INF, 2.0], [NAN, INF]])
    s = metric_summary(values, ["a", "b"])
    assert s["per_class"] == {"a": 2.0, "b": 2.0}
    assert s["per_class_std"] == {"a": 1.0, "b": 0.0}
    assert s["per_class_count"] == {"a": 2, "b": 3}
    assert s["infinite"] == 2 and s["per_class_infinite"] == {"a": 1, "b": 1}
    assert s["undefined"] == 1 and s["per_class_undefined"] == {"a": 1, "b": 0}
    assert s["mean"] == 2.0
    # std over the cases whose every class is finite: case means 1.5 and 2.5
    assert s["std"] == pytest.approx(0.5)
    nothing = metric_summary(torch.tensor([[INF], [NAN]]), ["a"])
    assert nothing["mean"] is None and nothing["std"] is None and nothing["per_class"] == {"a": None}
    assert nothing["infinite"] == 1 and nothing["undefined"] == 1


def test_infinite_hd95_counts_empty_prediction_and_empty_target() -> None:
    res = evaluate(Threshold(), _cases((8, 8)), batch_size=3, device="cpu", class_names=["a", "b"])
    hd = res["hd95"]
    # class a: case2 missed (empty prediction), case3 hallucinated (empty target) -> 2 infinite
    assert hd["per_class_infinite"] == {"a": 2, "b": 0} and hd["infinite"] == 2
    # class b of case3: both empty -> undefined, not infinite
    assert hd["per_class_undefined"] == {"a": 0, "b": 1} and hd["undefined"] == 1
    assert hd["per_class_count"] == {"a": 2, "b": 3}
    assert [r["hd95"][0] for r in res["per_case"]][2:] == [INF, INF]
    assert res["hd95_unit"] == "mm"


def test_per_case_rows_have_ids_in_data_order() -> None:
    cases = _cases((8, 8))
    for res in (evaluate(Threshold(), cases, batch_size=2, device="cpu"), evaluate_volumes(Threshold(), cases)):
        assert [r["id"] for r in res["per_case"]] == ["case0", "case1", "case2", "case3"]
        assert all(set(r) == {"id", "dice", "iou", "hd95"} for r in res["per_case"])
    # items without an id get their index
    anonymous = [{k: v for k, v in c.items() if k != "id"} for c in cases]
    assert [r["id"] for r in evaluate(Threshold(), anonymous, batch_size=3, device="cpu")["per_case"]] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match=r"rows\[1\] has no 'id'"):
        summarise([{"id": "x", "dice": [1.0]}, {"dice": [1.0]}], case_kind="image")


def _same(a: object, b: object) -> bool:
    """Equal, with nan == nan and floats compared to 1e-6."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)
    return a == b


def test_2d_and_3d_paths_give_the_same_summary() -> None:
    """The same predictions through train.evaluate (one forward per batch) and
    inference.evaluate_volumes (whole item or sliding windows): same keys, same numbers."""
    model = Threshold()
    images, volumes = _cases((8, 8)), _cases((6, 8, 8))
    results = {
        "2d evaluate": evaluate(model, images, batch_size=3, device="cpu"),
        "2d evaluate_volumes": evaluate_volumes(model, images),
        "2d sliding": evaluate_volumes(model, images, (4, 4), overlap=0.5),
        "3d evaluate": evaluate(model, volumes, batch_size=2, device="cpu"),
        "3d evaluate_volumes": evaluate_volumes(model, volumes),
        "3d sliding": evaluate_volumes(model, volumes, (4, 4, 4), overlap=0.5),
    }
    reference = results["2d evaluate"]
    assert reference["format"] == SUMMARY_FORMAT and reference["num_cases"] == 4
    for name, res in results.items():
        assert res.keys() == reference.keys(), name
        for metric in ("dice", "iou", "hd95"):
            assert res[metric].keys() == reference[metric].keys(), (name, metric)
        assert res["case_kind"] == ("image" if name.startswith("2d") else "volume")
    for dims in ("2d", "3d"):
        base = results[f"{dims} evaluate"]
        for other in ("evaluate_volumes", "sliding"):
            res = results[f"{dims} {other}"]
            assert _same(res, base), (dims, other)
    # the cases line up by id, and the same structures are missed or hallucinated in 2D and 3D
    for r2, r3 in zip(results["2d evaluate"]["per_case"], results["3d evaluate"]["per_case"]):
        assert r2["id"] == r3["id"]
    assert results["3d evaluate"]["dice"]["per_class_count"] == results["2d evaluate"]["dice"]["per_class_count"]
    assert results["3d evaluate"]["hd95"]["infinite"] == results["2d evaluate"]["hd95"]["infinite"] == 2


def test_case_metrics_spacing_per_case_and_shared() -> None:
    p = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    t = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    p[:, :, 2:6, 2:4] = True
    t[:, :, 2:6, 4:6] = True  # 2 columns apart
    shared = case_metrics(p, t, spacing=torch.tensor([1.0, 3.0]))["hd95"]
    per_case = case_metrics(p, t, spacing=torch.tensor([[1.0, 1.0], [1.0, 3.0]]))["hd95"]
    assert shared.flatten().tolist() == [6.0, 6.0]
    assert per_case.flatten().tolist() == [2.0, 6.0]
    assert set(case_metrics(p, t, hd95=False)) == {"dice", "iou"}


def test_json_round_trip_and_table() -> None:
    res = evaluate(Threshold(), _cases((8, 8)), batch_size=4, device="cpu", class_names=["a", "b"])
    text = json.dumps(json_safe(res), allow_nan=False)  # inf/nan became null
    back = json.loads(text)
    again = summarise(back["per_case"], case_kind="image", class_names=["a", "b"], hd95_unit="mm")
    # read back, an infinite value is null and counts as undefined: the counts move, the means do not
    assert again["hd95"]["per_class"] == res["hd95"]["per_class"]
    assert again["hd95"]["undefined"] == res["hd95"]["undefined"] + res["hd95"]["infinite"]
    table = format_table(res)
    assert "HD95 mm" in table and "2/4" in table and "mean" in table
    assert f"{res['dice']['per_class']['a']:.4f} ± {res['dice']['per_class_std']['a']:.4f}" in table


def test_summarise_rejects_inconsistent_rows() -> None:
    rows = case_rows(["x", "y"], {"dice": torch.ones(2, 2), "iou": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="class_names has 1 names but the masks have 2"):
        summarise(rows, case_kind="image", class_names=["a"])
    with pytest.raises(ValueError, match="case_kind"):
        summarise(rows, case_kind="slice")
    with pytest.raises(ValueError, match="empty"):
        summarise([], case_kind="image")
    with pytest.raises(ValueError, match=r"rows\[1\]"):
        summarise([rows[0], {"id": "z", "dice": [1.0]}], case_kind="volume")
