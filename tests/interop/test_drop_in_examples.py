"""The drop-in examples run end to end at a tiny size and report an exact start."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from ._smp import import_smp

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["--pretrain-steps", "2", "--steps", "2", "--num-train", "8", "--num-val", "4", "--batch-size", "2",
        "--state-size", "4", "--seed", "1"]  # fmt: skip


def _run(script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr(sys, "argv", [script, *TINY])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return capsys.readouterr().out


def test_drop_in_monai_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("monai", reason="MONAI is installed by the 'dev' extra")
    pytest.importorskip("spatialrec.data", reason="the synthetic data set (spatialrec.data) is not installed yet")
    out = _run("drop_in_monai.py", monkeypatch, capsys)
    assert "max abs difference of the logits at initialisation (eval mode): 0\n" in out
    assert "replaced 4: down_2.convs.conv_1.conv" in out
    assert "converted, after fine-tuning:" in out and "(control)" in out


def test_drop_in_smp_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import_smp()
    pytest.importorskip("spatialrec.data", reason="the synthetic data set (spatialrec.data) is not installed yet")
    out = _run("drop_in_smp.py", monkeypatch, capsys)
    assert "max abs difference of the logits at initialisation (eval mode): 0\n" in out
    assert "replaced 2: decoder.blocks.1.conv2.0, decoder.blocks.2.conv2.0" in out


def test_examples_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for script in ("drop_in_monai.py", "drop_in_smp.py"):
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        monkeypatch.syspath_prepend(str(EXAMPLES))
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(EXAMPLES / script), run_name="__main__")
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for flag in ("--steps", "--device", "--seed", "--select"):
            assert flag in out, (script, flag)
