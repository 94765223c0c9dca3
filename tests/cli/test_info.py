"""``spatialrec info``: versions, backends, Triton and CUDA status."""

from __future__ import annotations

import json

import pytest
import torch

import spatialrec
from spatialrec.cli import main
from spatialrec.cli.info import collect


def test_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spatialrec"] == spatialrec.__version__
    assert info["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["backends"]["available"] == list(spatialrec.ops.available_backends())
    assert info["backends"]["auto_cpu"] == "fused"
    assert info["cuda"]["available"] == torch.cuda.is_available()


def test_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"spatialrec {spatialrec.__version__}")
    for part in ("scan backends:", "CUDA:", "SPATIALREC_BACKEND", "torch"):
        assert part in text


def test_backend_variable_is_reported(option_env) -> None:  # type: ignore[no-untyped-def]
    option_env("backend", "reference")
    info = collect()["backends"]
    assert info["auto_cpu"] == "reference" and info["options"]["backend"] == "reference"
    option_env("backend", "nonsense")
    info = collect()["backends"]
    assert "nonsense" in info["auto_cpu"] and "nonsense" in info["options"]["backend"]  # reported, not raised


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["info", "--colour"])
    assert info.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err
