"""Bad command-line values are usage errors (message and exit status 2), never tracebacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.data.data_writers import write_dsb_kaggle, write_lits
from tests.examples.test_examples import TINY, load_example

BAD = [
    (["--epochs", "-1"], r"--epochs: .*-1"),
    (["--epochs", "0"], r"--epochs: .*0"),
    (["--batch-size", "0"], r"--batch-size: "),
    (["--lr", "-0.001"], r"--lr: .*-0\.001"),
    (["--patience", "0"], r"--patience: "),
    (["--seed", "-3"], r"--seed: "),
    (["--num-workers", "-1"], r"--num-workers: "),
    (["--model", "nope"], r"--model 'nope' is not a registered model.*sdn_unet"),
    (["--device", "tpu"], r"--device 'tpu'.*expected 'auto', 'cpu', 'cuda'"),
    (["--model-arg", "bogus=1"], r"--model-arg.*bogus"),
    (["--model-arg", "depth=-2"], r"--model-arg.*depth"),
]  # fmt: skip


@pytest.mark.parametrize("bad,message", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_values_are_usage_errors(tmp_path: Path, bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    write_dsb_kaggle(data, n=8)
    ex = load_example("dsb2018")
    with pytest.raises(SystemExit) as info:
        ex.main(ex.SPEC, ["--data-dir", str(data), "--out", str(out), *TINY, *bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists(), "nothing may start on a usage error"


@pytest.mark.parametrize("bad,message", [
    (["--model", "nope"], r"--model 'nope' is not a registered model"),
    (["--overlap", "1.5"], r"--overlap: .*1\.5"),
    (["--fg-ratio", "-0.1"], r"--fg-ratio: "),
    (["--samples-per-volume", "0"], r"--samples-per-volume: "),
    (["--model-arg", "bogus=1"], r"--model-arg.*bogus"),
])  # fmt: skip
def test_3d_mode_bad_values_are_usage_errors(tmp_path: Path, bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    write_lits(data, n=3, shape=(16, 16, 12))
    ex = load_example("lits")
    argv = ["--data-dir", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--3d",
            "--epochs", "1", "--device", "cpu", "--no-progress", *bad]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        ex.main(ex.SPEC, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and re.search(message, err), err


@pytest.mark.parametrize("bad,message", [
    (["--epochs", "-1"], r"--epochs: "),
    (["--device", "tpu"], r"--device 'tpu'"),
    (["--threads", "0"], r"--threads: "),
    (["--num-test", "0"], r"--num-test: "),
])  # fmt: skip
def test_holistic_demo_bad_values_are_usage_errors(tmp_path: Path, bad: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    demo = load_example("holistic_demo")
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as info:
            demo.main(["--out", str(tmp_path / "demo"), "--no-progress", *bad])
    finally:
        torch.set_num_threads(threads)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and re.search(message, err), err
    assert not (tmp_path / "demo").exists()
