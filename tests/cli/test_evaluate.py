"""``spatialrec evaluate``: a trained run's checkpoint tested again gives the run's own test result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spatialrec.cli import main
from tests.cli.test_train import TINY, TINY_3D
from tests.data.data_writers import write_dsb_kaggle, write_lits


@pytest.fixture(scope="module")
def dsb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dsb")
    data, out = root / "data", root / "run"
    write_dsb_kaggle(data, n=8)
    assert main(["train", "--dataset", "dsb2018", "--data-dir", str(data), "--out", str(out), *TINY, "--seed", "3"]) == 0
    return data, out


def test_evaluate_reproduces_the_test_of_the_run(dsb_run: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    data, out = dsb_run
    capsys.readouterr()
    report = tmp_path / "eval.json"
    argv = ["evaluate", "--dataset", "dsb2018", "--data-dir", str(data), "--checkpoint", str(out / "best.pt"),
            "--device", "cpu", "--no-progress", "--output", str(report)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test images" in printed and "mean" in printed
    got = json.loads(report.read_text())
    want = json.loads((out / "metrics.json").read_text())["test"]
    # Model, its arguments, the image size and the seed (the split) come from the run's records.
    assert got["num_cases"] == want["num_cases"] and len(got["per_case"]) == got["num_cases"]
    assert got["dice"]["mean"] == pytest.approx(want["dice"]["mean"], abs=1e-6)
    assert list(got["dice"]["per_class"]) == ["nucleus"]


def test_without_a_record_the_model_must_be_named(dsb_run: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    data, out = dsb_run
    lone = tmp_path / "lone.pt"
    lone.write_bytes((out / "best.pt").read_bytes())
    base = ["evaluate", "--dataset", "dsb2018", "--data-dir", str(data), "--checkpoint", str(lone), "--device", "cpu",
            "--no-progress", "--image-size", "16"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(base)
    assert info.value.code == 2 and "--model is needed" in capsys.readouterr().err
    # Named, but not the architecture of the weights: reported with status 1, no traceback.
    assert main([*base, "--model", "unet", "--model-arg", "depth=1", "--model-arg", "base_width=4"]) == 1
    assert "do not fit --model unet" in capsys.readouterr().err
    # Named right: tested.
    named = [*base, "--model", "sdn_unet", "--model-arg", "depth=1", "--model-arg", "base_width=4",
             "--model-arg", "state_size=4"]  # fmt: skip
    assert main(named) == 0


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "dsb2018", "--data-dir", "d"], r"required: --checkpoint"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--checkpoint", "absent.pt", "--model", "unet"], r"--checkpoint 'absent.pt': no such file"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--checkpoint", "x.pt", "--model", "nope"], r"--model 'nope'"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--checkpoint", "x.pt", "--batch-size", "0"], r"--batch-size: "),
    (["--dataset", "x"], r"--dataset: invalid choice"),
])  # fmt: skip
def test_bad_arguments_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    with pytest.raises(SystemExit) as info:
        main(["evaluate", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spatialrec evaluate") and re.search(message, err.strip().splitlines()[-1]), err


def test_damaged_checkpoint_is_reported(dsb_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = dsb_run
    cut = tmp_path / "cut.pt"
    cut.write_bytes((out / "best.pt").read_bytes()[:1000])
    argv = ["evaluate", "--dataset", "dsb2018", "--data-dir", str(data), "--checkpoint", str(cut), "--model", "sdn_unet"]
    assert main(argv) == 1
    assert "cut short or damaged" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_evaluate_a_3d_run_on_whole_volumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out, cache = tmp_path / "data", tmp_path / "run", tmp_path / "cache"
    write_lits(data, n=3, shape=(16, 16, 12))
    common = ["--data-dir", str(data), "--cache-dir", str(cache)]
    assert main(["train", "--dataset", "lits", *common, "--out", str(out), *TINY_3D]) == 0
    report = tmp_path / "eval3d.json"
    argv = ["evaluate", "--dataset", "lits", *common, "--checkpoint", str(out / "best.pt"), "--device", "cpu",
            "--no-progress", "--overlap", "0.25", "--output", str(report)]  # fmt: skip
    assert main(argv) == 0  # --3d, the model and the patch size come from the run's metrics.json
    got, want = json.loads(report.read_text()), json.loads((out / "metrics3d.json").read_text())
    assert got["case_kind"] == "volume" and got["num_cases"] == want["num_cases"] == 1
    assert got["dice"]["mean"] == pytest.approx(want["dice"]["mean"], abs=1e-6)
