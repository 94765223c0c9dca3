"""spatialrec.options: typed getters and setters, the override context, environment defaults read
once, bad values, and the options reaching the code that uses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from spatialrec import options
from spatialrec.data._ct import default_cache_dir
from spatialrec.ops import fused, resolve_backend


@pytest.fixture(autouse=True)
def _defaults(option_env):
    """Every test starts from the built-in defaults (no variable set) and leaves nothing set."""
    for name in options.ENV_VARS:
        option_env(name, None)
    yield
    options.reset()


def test_defaults():
    assert options.get_backend() == "auto"
    assert options.get_fused_gates() == "save"
    assert options.get_triton_precision() == "ieee"  # torch's default "highest"
    assert options.get_cache_dir() == Path.home() / ".cache" / "spatialrec"


def test_setters_getters_and_reset():
    options.set_backend("reference")
    options.set_fused_gates(" Recompute ")  # as the variables and backend= arguments: case and spaces ignored
    options.set_triton_precision("tf32")
    options.set_cache_dir("/tmp/sr-cache")
    assert options.get_backend() == "reference"
    assert options.get_fused_gates() == "recompute"
    assert options.get_triton_precision() == "tf32"
    assert options.get_cache_dir() == Path("/tmp/sr-cache")
    options.reset("backend")
    assert options.get_backend() == "auto" and options.get_fused_gates() == "recompute"
    options.reset()
    assert (options.get_fused_gates(), options.get_triton_precision()) == ("save", "ieee")


@pytest.mark.parametrize(
    "setter, value, exc, match",
    [
        (options.set_backend, "cuda", ValueError, r"backend='cuda'.*\('auto', 'reference', 'fused', 'triton'\)"),
        (options.set_backend, 3, TypeError, "backend must be a str, got int"),
        (options.set_fused_gates, "fast", ValueError, r"fused_gates='fast'.*\('save', 'recompute'\)"),
        (options.set_fused_gates, None, TypeError, "fused_gates must be a str"),
        (options.set_triton_precision, "fp8", ValueError, r"triton_precision='fp8'.*\('auto', 'ieee', 'tf32'\)"),
        (options.set_triton_precision, True, TypeError, "triton_precision must be a str"),
        (options.set_cache_dir, "", ValueError, "cache_dir='' is empty"),
        (options.set_cache_dir, 7, TypeError, "cache_dir must be a str or os.PathLike"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(setter, value, exc, match):
    with pytest.raises(exc, match=match):
        setter(value)
    assert (options.get_backend(), options.get_fused_gates()) == ("auto", "save")


def test_override_restores_nests_and_survives_exceptions():
    options.set_fused_gates("recompute")
    with options.override(backend="fused", fused_gates="save"):
        assert (options.get_backend(), options.get_fused_gates()) == ("fused", "save")
        with options.override(backend="reference", cache_dir=Path("/tmp/x")):
            assert options.get_backend() == "reference" and options.get_cache_dir() == Path("/tmp/x")
            assert options.get_fused_gates() == "save"  # not named: unchanged
        assert options.get_backend() == "fused" and options.get_cache_dir() == Path.home() / ".cache" / "spatialrec"
    assert (options.get_backend(), options.get_fused_gates()) == ("auto", "recompute")
    with pytest.raises(RuntimeError, match="boom"), options.override(backend="reference"):
        raise RuntimeError("boom")
    assert options.get_backend() == "auto"


def test_override_checks_every_value_before_changing_any():
    with pytest.raises(ValueError, match="fused_gates='fast'"):
        with options.override(backend="reference", fused_gates="fast"):
            pass  # pragma: no cover - never entered
    assert options.get_backend() == "auto"


def test_environment_defaults_are_read_once(monkeypatch, option_env):
    option_env("backend", "reference")
    option_env("cache_dir", "/tmp/from-env")
    assert options.get_backend() == "reference"
    assert options.get_cache_dir() == Path("/tmp/from-env")
    # Changing the environment afterwards does nothing until reset() reads it again.
    monkeypatch.setenv(options.ENV_VARS["backend"], "fused")
    assert options.get_backend() == "reference"
    options.set_backend("triton")  # a set value wins over the variable
    assert options.get_backend() == "triton"
    options.reset("backend")
    assert options.get_backend() == "fused"


def test_bad_environment_values_fail_where_used_naming_the_variable(option_env):
    option_env("backend", "nonsense")
    option_env("fused_gates", "fast")
    option_env("triton_precision", "fp8")
    with pytest.raises(ValueError, match="SPATIALREC_BACKEND='nonsense'"):
        options.get_backend()
    with pytest.raises(ValueError, match="SPATIALREC_FUSED_GATES='fast'.*'recompute'"):
        options.get_fused_gates()
    with pytest.raises(ValueError, match="SPATIALREC_TRITON_PRECISION='fp8'"):
        options.get_triton_precision()
    with options.override(backend="fused"):  # a set value makes the variable irrelevant
        assert options.get_backend() == "fused"


def test_reset_rejects_unknown_names():
    with pytest.raises(ValueError, match="'speed', which is not an option"):
        options.reset("speed")


@pytest.mark.parametrize("matmul, want", [("highest", "ieee"), ("high", "tf32"), ("medium", "tf32")])
def test_triton_precision_follows_torch_unless_set(matmul, want):
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(matmul)
        assert options.get_triton_precision() == want
        with options.override(triton_precision="ieee"):
            assert options.get_triton_precision() == "ieee"
        with options.override(triton_precision="tf32"):
            assert options.get_triton_precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_options_reach_their_users():
    x = torch.zeros(1, 2, 3, 3)
    with options.override(backend="reference", fused_gates="recompute", cache_dir="/tmp/c"):
        assert resolve_backend("auto", x) == "reference"
        assert resolve_backend("fused", x) == "fused"  # an explicit backend= wins over the option
        assert not fused.save_gates()
        assert default_cache_dir() == Path("/tmp/c")
    assert resolve_backend("auto", x) == "fused" and fused.save_gates()


def test_scoped_environ_restores():
    key = "SPATIALREC_TEST_SCOPED"
    os.environ.pop(key, None)
    with options.scoped_environ(**{key: "1"}):
        assert os.environ[key] == "1"
        with pytest.raises(RuntimeError), options.scoped_environ(**{key: None}):
            assert key not in os.environ
            raise RuntimeError
        assert os.environ[key] == "1"
    assert key not in os.environ
    with pytest.raises(TypeError, match=key):
        with options.scoped_environ(**{key: 1}):  # type: ignore[arg-type]
            pass  # pragma: no cover
