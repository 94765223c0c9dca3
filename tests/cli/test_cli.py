"""The ``spatialrec`` command: the sub-command table, help, usage errors and ``python -m spatialrec``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spatialrec import __version__
from spatialrec.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in ("demo", "train", "evaluate", "info"):
        assert name in text
    assert set(COMMANDS) == {"demo", "train", "evaluate", "info"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"spatialrec {__version__}"


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: COMMAND"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["--nope"], "the following arguments are required: COMMAND"),
])  # fmt: skip
def test_missing_or_unknown_command_is_a_usage_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spatialrec") and message in err and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: spatialrec {command}")


def test_python_dash_m_runs_the_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "spatialrec", "--version"], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.strip() == f"spatialrec {__version__}", ok.stderr
    bad = subprocess.run([sys.executable, "-m", "spatialrec", "train", "--dataset", "dsb2018", "--data-dir", "x",
                          "--epochs", "0"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "--epochs: expected an integer in (0, inf), got 0" in bad.stderr
