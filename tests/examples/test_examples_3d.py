"""The CT examples' --3d mode trains one short epoch on tiny NIfTI volumes and tests whole volumes."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.data.data_writers import write_lits, write_segthor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# A tiny SDN-UNet-3D on 8^3 patches of 12x16x16 volumes, one epoch: the whole path from NIfTI
# files to volume-level metrics.
TINY_3D = [
    "--3d", "--model-arg", "depth=2", "--model-arg", "base_width=4", "--model-arg", "state_size=3",
    "--epochs", "1", "--device", "cpu", "--no-progress", "--image-size", "16", "--patch-size", "8",
    "--samples-per-volume", "2", "--overlap", "0.25",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"spatialrec_example3d_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    ("lits", ["--target", "liver"], ["liver"], (0.7, 0.8, 2.5)),
    ("segthor", ["--organ", "all"], ["oesophagus", "heart", "trachea", "aorta"], (0.9, 0.9, 2.0)),
]


@pytest.mark.parametrize("name,extra,classes,zooms", CASES, ids=[c[0] for c in CASES])
def test_3d_example_trains_one_epoch_and_tests_whole_volumes(
    tmp_path: Path, name: str, extra: list[str], classes: list[str], zooms: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    (write_lits if name == "lits" else write_segthor)(data, n=3, shape=(16, 16, 12))
    ex = load_example(name)
    argv = ["--data-dir", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY_3D, *extra]
    assert ex.main(ex.SPEC, argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["model"] == "sdn_unet3d" and summary["mode"] == "3d"
    with open(out / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (out / "best.pt").is_file()
    m3 = json.loads((out / "metrics3d.json").read_text())
    assert m3["num_cases"] == 1 and len(m3["per_case"]) == 1  # 3 volumes: 1 train, 1 val, 1 test
    assert list(m3["dice"]["per_class"]) == classes and list(m3["hd95"]["per_class"]) == classes
    assert all(0.0 <= d <= 1.0 for d in m3["per_case"][0]["dice"])
    # HD95 is in mm: any defined value is a distance between voxel centres with this spacing
    for hd in m3["per_case"][0]["hd95"]:
        assert hd is None or hd >= 0.0
    printed = capsys.readouterr().out
    assert "HD95 mm" in printed and str(out / "metrics3d.json") in printed


def test_without_3d_the_example_stays_2d(tmp_path: Path) -> None:
    from spatialrec.cli.train import wants_3d

    ex = load_example("lits")
    assert not wants_3d(["--data-dir", "x"]) and wants_3d(["--3d"])
    # a missing data folder is reported the same way in 3D mode
    assert ex.main(ex.SPEC, ["--data-dir", str(tmp_path / "nowhere"), "--3d"]) == 2


def test_3d_resume_without_a_checkpoint_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_lits(data, n=3, shape=(16, 16, 12))
    ex = load_example("lits")
    argv = ["--data-dir", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *TINY_3D]
    assert ex.main(ex.SPEC, [*argv, "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
