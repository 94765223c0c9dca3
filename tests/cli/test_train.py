"""``spatialrec train``: data-set choice, help, usage errors, small real runs of every data set, resume."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from spatialrec.cli import main
from tests.data.data_writers import write_cvc, write_dsb_kaggle, write_lits, write_segthor

# A tiny SDN-UNet, one epoch: what matters is the whole path from files to the run folder.
TINY = [
    "--model", "sdn_unet", "--model-arg", "depth=1", "--model-arg", "base_width=4", "--model-arg", "state_size=4",
    "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-progress", "--image-size", "16",
]  # fmt: skip
TINY_3D = [
    "--3d", "--model-arg", "depth=2", "--model-arg", "base_width=4", "--model-arg", "state_size=3",
    "--epochs", "1", "--device", "cpu", "--no-progress", "--image-size", "16", "--patch-size", "8",
    "--samples-per-volume", "2", "--overlap", "0.25",
]  # fmt: skip

WRITERS = {
    "dsb2018": lambda root: write_dsb_kaggle(root, n=8),
    "cvc_clinicdb": lambda root: write_cvc(root, n=8),
    "lits": lambda root: write_lits(root, n=3),
    "segthor": lambda root: write_segthor(root, n=3),
}


def _train(tmp_path: Path, dataset: str, *extra: str) -> tuple[int, Path]:
    data, out = tmp_path / "data", tmp_path / "run"
    if not data.exists():
        WRITERS[dataset](data)
    if dataset in ("lits", "segthor"):
        extra = (*extra, "--cache-dir", str(tmp_path / "cache"))
    status = main(["train", "--dataset", dataset, "--data-dir", str(data), "--out", str(out), *extra])
    return status, out


@pytest.mark.parametrize("dataset,extra,classes", [
    ("dsb2018", [], ["nucleus"]),
    ("cvc_clinicdb", [], ["polyp"]),
    ("lits", ["--target", "both"], ["liver", "tumour"]),
    ("segthor", ["--organ", "heart"], ["heart"]),
])  # fmt: skip
def test_every_dataset_trains_one_epoch(tmp_path: Path, dataset: str, extra: list[str], classes: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    status, out = _train(tmp_path, dataset, *TINY, *extra)
    assert status == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["dataset"] == dataset and summary["model"] == "sdn_unet" and summary["epochs_completed"] == 1
    assert summary["model_args"] == {"depth": 1, "base_width": 4, "state_size": 4}
    assert list(summary["test"]["dice"]["per_class"]) == classes
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    printed = capsys.readouterr().out
    assert "mean" in printed and str(out / "metrics.json") in printed


@pytest.mark.usefixtures("one_thread")
def test_3d_run_tests_whole_volumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_segthor(data, n=3, shape=(16, 16, 12))
    status, out = _train(tmp_path, "segthor", *TINY_3D)
    assert status == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["mode"] == "3d" and summary["model"] == "sdn_unet3d" and summary["patch_size"] == [8, 8, 8]
    m3 = json.loads((out / "metrics3d.json").read_text())
    assert m3["case_kind"] == "volume" and m3["num_cases"] == 1 and list(m3["dice"]["per_class"]) == ["aorta"]
    assert "HD95 mm" in capsys.readouterr().out


def test_resume_continues_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path, "dsb2018", *TINY)[0] == 0
    two = [a if not (a == "1" and TINY[i - 1] == "--epochs") else "2" for i, a in enumerate(TINY)]
    status, out = _train(tmp_path, "dsb2018", *two, "--resume")
    assert status == 0
    with open(out / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    # The same folder without --resume is refused (status 1, a message), not overwritten.
    assert _train(tmp_path, "dsb2018", *TINY)[0] == 1
    assert "already holds a run" in capsys.readouterr().err


def test_missing_data_folder_says_where_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "segthor", "--data-dir", str(tmp_path / "absent"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Get the data" in err and "Patient_<nn>/GT.nii.gz" in err


def test_help_without_a_dataset_lists_the_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("dsb2018", "cvc_clinicdb", "lits", "segthor"))
    for flag in ("--data-dir", "--model", "--epochs", "--resume", "--out", "--seed"):
        assert flag in text


def test_help_of_a_dataset_lists_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "lits", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--target", "--slice-filter", "--cache-dir", "--3d", "--patch-size", "--data-dir"):
        assert flag in text
    assert "segmentation-<n>.nii" in text  # the layout expected


BAD = [
    ([], r"the following arguments are required: --dataset"),
    (["--dataset", "mnist"], r"--dataset: invalid choice: 'mnist'"),
    (["--dataset", "dsb2018"], r"the following arguments are required: --data-dir"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--epochs", "-1"], r"--epochs: .*-1"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--lr", "0"], r"--lr: "),
    (["--dataset", "dsb2018", "--data-dir", "d", "--image-size", "0x4"], r"--image-size"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--model", "nope"], r"--model 'nope' is not a registered model"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--model-arg", "bogus=1"], r"--model-arg.*bogus"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--device", "tpu"], r"--device 'tpu'"),
    (["--dataset", "dsb2018", "--data-dir", "d", "--3d"], r"unrecognized arguments: --3d"),
    (["--dataset", "lits", "--data-dir", "d", "--target", "lung"], r"--target: invalid choice"),
    (["--dataset", "lits", "--data-dir", "d", "--3d", "--overlap", "1"], r"--overlap: "),
    (["--dataset", "segthor", "--data-dir", "d", "--3d", "--patch-size", "8x8"], r"--patch-size"),
]  # fmt: skip


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_arguments_are_usage_errors(tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", *argv, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spatialrec train") and "Traceback" not in err
    assert re.search(message, err.strip().splitlines()[-1]), err
    assert not (tmp_path / "run").exists()
