"""examples/nnunet_sdn.py end to end at a tiny size: the unmodified nnU-Net commands plan,
preprocess, train (plain and SDN) and predict; marked slow (minutes on a 2-core CPU, see
docs/nnunet.md)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from ._nnunet import import_nnunet

pytestmark = [pytest.mark.nnunet, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nnunet_sdn.py"


def test_nnunet_sdn_example_end_to_end(tmp_path: Path) -> None:
    import_nnunet()
    module = runpy.run_path(str(EXAMPLE), run_name="nnunet_sdn_example")
    # nnU-Net's 5-fold split needs at least 5 training cases; fold 0 trains on 8 of these 10.
    report = module["main"](
        ["--work-dir", str(tmp_path / "work"), "--num-train", "10", "--num-test", "4", "--epochs", "1",
         "--iterations", "2", "--val-iterations", "1", "--state-size", "4", "--timing-iterations", "1"]
    )  # fmt: skip
    for label in ("plain", "sdn"):
        assert 0.0 <= report[f"dice_{label}"] <= 1.0
        assert len(list((tmp_path / "work" / f"pred_{label}").glob("*.png"))) == 4
    assert report["iteration_cost_ratio"] > 0
    plans = (tmp_path / "work" / "results" / "Dataset981_SDNSynthetic" / "nnUNetTrainer_SpatialrecShort__nnUNetPlans_SDN__2d" / "plans.json")
    assert "spatialrec.integrations.nnunet.SDNPlainConvUNet" in plans.read_text()
