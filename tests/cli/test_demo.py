"""``spatialrec demo``: flags, usage errors, and a small real run (table, figure, summary)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from spatialrec.cli import main

SMALL = ["--epochs", "1", "--image-size", "24", "--num-train", "8", "--num-val", "4", "--num-test", "3",
         "--figure-images", "2", "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()  # the demo sets its own thread count
    yield
    torch.set_num_threads(n)


def test_small_run_prints_the_table_and_saves_figure_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "test Dice" in printed and "HD95" in printed and str(out / "summary.json") in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"unet", "sdn_unet"}
    assert summary["settings"]["image_size"] == 24 and summary["settings"]["num_test"] == 3
    for name, m in summary["models"].items():
        assert m["epochs"] == 1 and 0.0 <= m["test_dice"] <= 1.0
        assert (out / name / "metrics.json").is_file() and (out / name / "best.pt").is_file()
    with Image.open(out / "holistic_demo.png") as im:
        assert im.size[0] > 4 * 24 * 3 and im.size[1] > 2 * 24 * 3  # 4 columns, 2 rows of 3x tiles


def test_check_fails_when_a_target_is_missed(tmp_path: Path) -> None:
    # One epoch on eight images cannot bring sdn_unet to Dice 0.9: --check must say so by its status.
    assert main(["demo", "--out", str(tmp_path / "demo"), *SMALL, "--check"]) == 1


@pytest.mark.parametrize("bad,message", [
    (["--epochs", "0"], r"--epochs: expected an integer in \(0, inf\), got 0"),
    (["--lr", "nan"], r"--lr: "),
    (["--device", "tpu"], r"--device 'tpu'"),
    (["--image-size", "big"], r"--image-size: expected an integer"),
    (["--unknown"], r"unrecognized arguments: --unknown"),
])  # fmt: skip
def test_bad_values_are_usage_errors(tmp_path: Path, bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(tmp_path / "demo"), "--no-progress", *bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spatialrec demo") and re.search(message, err) and "Traceback" not in err
    lines = err.strip().splitlines()  # argparse's usage, then the message on one line
    assert lines[-1].startswith("spatialrec demo: error: ") and all("error" not in line for line in lines[:-1])
    assert not (tmp_path / "demo").exists()


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--epochs", "--time-budget", "--image-size", "--check", "--device"):
        assert flag in text
