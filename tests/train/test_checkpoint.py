"""Checkpoints: damage inside a file, malformed entries, full disks, stale temporary files."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spatialrec.train import CheckpointError, fit, load_checkpoint, save_checkpoint
from spatialrec.train import checkpoint as C
from spatialrec.train.rng import capture_rng_state
from .helpers import TinySegmentation, soft_dice_loss, tiny_model

COMMON = dict(loss_fn=soft_dice_loss, device="cpu", progress=False, hd95=False, batch_size=4)


def _run(out: Path, epochs: int = 2, **kw) -> None:
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=epochs, out_dir=out, **{**COMMON, **kw})


def _damage_tensor(path: Path, key: str = "0.weight") -> None:
    """Change a few bytes of one stored tensor in place; the file keeps its length."""
    tensor = load_checkpoint(path)["model"][key]
    raw = tensor.numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    size = len(data)
    for i in range(at + 8, at + 12):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def test_damage_inside_a_tensor_is_detected_and_points_to_the_other_checkpoint(tmp_path: Path) -> None:
    _run(tmp_path, epochs=2)
    best_epoch = load_checkpoint(tmp_path / "best.pt")["epoch"]
    _damage_tensor(tmp_path / "last.pt")
    # Without the checksum torch reads this file without complaint.
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    with pytest.raises(CheckpointError, match=r"last\.pt.*checksum") as info:
        load_checkpoint(tmp_path / "last.pt")
    msg = str(info.value)
    assert str(tmp_path / "best.pt") in msg and f"epoch {best_epoch}" in msg
    with pytest.raises(CheckpointError, match=r"last\.pt.*checksum"):
        _run(tmp_path, epochs=3, resume=True)
    # The other checkpoint is the way out: resuming from it works.
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=3, out_dir=tmp_path,
        resume=tmp_path / "best.pt", **COMMON)  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_damaged_best_with_no_good_alternative_says_so(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    _damage_tensor(tmp_path / "best.pt")
    _damage_tensor(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"best\.pt.*checksum.*no other good checkpoint"):
        load_checkpoint(tmp_path / "best.pt")


def test_checksum_covers_every_entry(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(6.0)}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 1,
             "early_stopping": {"best_val_loss": 0.5, "best_epoch": 1, "bad_epochs": 0},
             "rng": [capture_rng_state()], "history": [{"epoch": 1, "val_loss": 0.5}], "config": {"lr": 0.1}}  # fmt: skip
    path = save_checkpoint(state, tmp_path / "x.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw["checksum"]) == {"algorithm", "digest"} and raw["checksum"]["algorithm"] == "sha256"
    # A file rewritten with one plain value changed (here by torch.save itself) fails the check.
    raw["history"][0]["val_loss"] = 0.25
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_checkpoint_without_checksum_from_an_older_version_still_loads(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    del raw["checksum"]
    raw["format"] = "spatialrec.train/1"
    torch.save(raw, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def _valid_state() -> dict:
    return {
        "model": tiny_model().state_dict(), "optimizer": {"state": {}, "param_groups": []}, "scheduler": None,
        "scaler": None, "epoch": 1, "early_stopping": {"best_val_loss": 0.5, "best_epoch": 1, "bad_epochs": 0},
        "rng": [capture_rng_state()], "history": [{"epoch": 1, "epoch_time": 0.1}], "train_time": 0.1,
        "config": {},
    }  # fmt: skip


@pytest.mark.parametrize("key,value", [
    ("early_stopping", "oops"),
    ("early_stopping", {"best_val_loss": 0.5}),
    ("history", ["row"]),
    ("rng", {}),
    ("epoch", "3"),
    ("model", ["weights"]),
    ("config", None),
    ("optimizer", 3),
])  # fmt: skip
def test_malformed_entry_names_the_file_and_the_key(tmp_path: Path, key: str, value: object) -> None:
    path = save_checkpoint({**_valid_state(), key: value}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=rf"odd\.pt.*'{key}'"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"odd\.pt.*'{key}'"):
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=2, out_dir=tmp_path / "run", resume=path,
            **COMMON)  # fmt: skip


def test_optimizer_state_that_does_not_fit_names_the_key(tmp_path: Path) -> None:
    state = _valid_state()
    state["optimizer"] = {"state": {}, "param_groups": [{"params": [0], "lr": 1.0}, {"params": [1], "lr": 1.0}]}
    path = save_checkpoint(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd\.pt.*'optimizer'"):
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=2, out_dir=tmp_path / "run", resume=path,
            **COMMON)  # fmt: skip


def test_disk_full_while_saving_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path, epochs=1)
    before = (tmp_path / "last.pt").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(OSError) as info:
        _run(tmp_path, epochs=2, resume=True)
    err = info.value
    assert err.errno == errno.ENOSPC
    assert err.filename in (str(tmp_path / "last.pt"), str(tmp_path / "best.pt"))
    assert err.filename in str(err) and "No space left on device" in str(err)
    assert (tmp_path / "last.pt").read_bytes() == before  # the previous checkpoint is intact
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_disk_full_while_writing_metrics_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spatialrec.train import runfiles

    real_fsync = os.fsync

    def full(fd: int) -> None:
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfiles.os, "fsync", full)
    with pytest.raises(OSError) as info:
        _run(tmp_path, epochs=1)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "metrics.csv")




def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1)
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".last.pt.tmp-{dead}", tmp_path / f".best.pt.tmp-{dead}", tmp_path / f".metrics.csv.tmp-{dead}"]
        live = [tmp_path / f".last.pt.tmp-{sleeper.pid}", tmp_path / f".metrics.json.tmp-{os.getppid()}"]
        other = [tmp_path / f".notes.txt.tmp-{dead}", tmp_path / "last.pt.tmp-1"]
        for f in stale + live + other:
            f.write_bytes(b"partial")
        _run(tmp_path, epochs=2, resume=True)
        assert not any(f.exists() for f in stale)
        assert all(f.exists() for f in live), "a live process's temporary file was removed"
        assert all(f.exists() for f in other), "a file fit does not write was removed"
        # a fresh run in the folder (overwrite) cleans up as well
        (tmp_path / f".last.pt.tmp-{dead}").write_bytes(b"partial")
        _run(tmp_path, epochs=1, overwrite=True)
        assert not (tmp_path / f".last.pt.tmp-{dead}").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
