"""Every example trains one short epoch end to end on tiny fixture data in its real on-disk layout."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.data.data_writers import (
    write_cvc,
    write_dsb_kaggle,
    write_lits,
    write_segthor,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# A tiny SDN-UNet, one epoch: what matters here is the whole path from files to metrics.json.
TINY = [
    "--model", "sdn_unet", "--model-arg", "depth=1", "--model-arg", "base_width=4", "--model-arg", "state_size=4",
    "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-progress", "--image-size", "16",
]  # fmt: skip


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"spatialrec_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(name: str, root: Path) -> None:
    if name == "dsb2018":
        write_dsb_kaggle(root, n=8)
    elif name == "cvc_clinicdb":
        write_cvc(root, n=8)
    elif name == "lits":
        write_lits(root, n=3)
    else:
        write_segthor(root, n=3)


CASES = [
    ("dsb2018", [], ["nucleus"]),
    ("cvc_clinicdb", [], ["polyp"]),
    ("lits", ["--target", "both"], ["liver", "tumour"]),
    ("segthor", ["--organ", "all"], ["oesophagus", "heart", "trachea", "aorta"]),
]


@pytest.mark.parametrize("name,extra,classes", CASES, ids=[c[0] for c in CASES])
def test_example_trains_one_epoch_and_writes_metrics(
    tmp_path: Path, name: str, extra: list[str], classes: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    _write(name, data)
    if name in ("lits", "segthor"):
        extra = extra + ["--cache-dir", str(tmp_path / "cache")]
    ex = load_example(name)
    status = ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *TINY, *extra])
    assert status == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["example"] == name and summary["model"] == "sdn_unet"
    assert summary["epochs_completed"] == 1
    test = summary["test"]
    assert test["num_cases"] >= 1
    for metric in ("dice", "iou", "hd95"):
        assert list(test[metric]["per_class"]) == classes
    assert all(0.0 <= v <= 1.0 for v in test["dice"]["per_class"].values())
    with open(out / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    printed = capsys.readouterr().out
    assert "mean" in printed and str(out / "metrics.json") in printed


def test_example_resume_continues_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    write_dsb_kaggle(data, n=8)
    ex = load_example("dsb2018")
    assert ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *TINY]) == 0
    args2 = [a if a != "1" or TINY[i - 1] != "--epochs" else "2" for i, a in enumerate(TINY)]
    assert ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *args2, "--resume"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["epochs_completed"] == 2
    # Starting again in the same folder without --resume is refused, not overwritten.
    assert ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *TINY]) == 1
    assert "already holds a run" in capsys.readouterr().err
    # A checkpoint cut short is reported, not a traceback.
    last = out / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *args2, "--resume"]) == 1
    assert "cut short or damaged" in capsys.readouterr().err


@pytest.mark.parametrize("name,hint", [
    ("dsb2018", "stage1_train"), ("cvc_clinicdb", "Ground Truth"),
    ("lits", "segmentation-<n>.nii"), ("segthor", "Patient_<nn>/GT.nii.gz"),
])  # fmt: skip
def test_missing_data_folder_says_where_to_get_it(
    tmp_path: Path, name: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = load_example(name)
    assert ex.main(ex.SPEC, ["--data-dir", str(tmp_path / "absent"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Get the data" in err and hint in err


def test_wrong_layout_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data" / "something").mkdir(parents=True)
    ex = load_example("cvc_clinicdb")
    assert ex.main(ex.SPEC, ["--data-dir", str(tmp_path / "data"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot read the data" in err and "Original" in err


@pytest.mark.parametrize("name", ["dsb2018", "cvc_clinicdb", "lits", "segthor"])
def test_help_lists_the_shared_flags(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    ex = load_example(name)
    with pytest.raises(SystemExit) as info:
        ex.main(ex.SPEC, ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--model", "--epochs", "--batch-size", "--lr", "--device", "--out", "--resume", "--seed"):
        assert flag in text, flag


def test_holistic_demo_runs_and_saves_table_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    demo = load_example("holistic_demo")
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--epochs", "1", "--image-size", "24", "--num-train", "8", "--num-val", "4",
            "--num-test", "3", "--figure-images", "2", "--no-progress"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert demo.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # the demo sets its own thread count
    printed = capsys.readouterr().out
    assert "test Dice" in printed and "HD95" in printed
    for name in ("unet", "sdn_unet"):
        assert any(line.startswith(name + " ") for line in printed.splitlines()), name
        assert (out / name / "metrics.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    params = {n: m["parameters"] for n, m in summary["models"].items()}
    assert abs(params["unet"] - params["sdn_unet"]) / params["sdn_unet"] < 0.1  # about equal size
    with Image.open(out / "holistic_demo.png") as im:
        assert im.mode == "RGB"
        w, h = im.size
    assert w > 4 * 24 * 3 and h > 2 * 24 * 3  # 4 columns, 2 rows of 3x tiles




@pytest.mark.slow
def test_example_under_torchrun_two_processes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    data, out = tmp_path / "data", tmp_path / "run"
    write_dsb_kaggle(data, n=8)
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(EXAMPLES / "dsb2018.py"), "--data-dir", str(data), "--out", str(out), *TINY]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["test"]["num_cases"] >= 1
    assert proc.stdout.count("metrics:") == 1  # only rank 0 prints the results


@pytest.mark.slow
def test_holistic_demo_meets_its_target(tmp_path: Path) -> None:
    """The full demo (about 2-3 minutes on 2 cores): sdn_unet Dice >= 0.90, unet <= 0.75."""
    demo = load_example("holistic_demo")
    threads = torch.get_num_threads()
    try:
        status = demo.main(["--out", str(tmp_path / "demo"), "--no-progress", "--check", "--time-budget", "100000"])
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["models"]["sdn_unet"]["test_dice"] >= 0.90
    assert summary["models"]["unet"]["test_dice"] <= 0.75
    assert status == 0 and summary["target_met"]
