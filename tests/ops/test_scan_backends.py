"""Backend selection (auto, explicit, environment variable) and the layers on every backend."""

from __future__ import annotations

import pytest
import torch

from spatialrec import ResidualSDN, SpatialDependencyLayer
from spatialrec.ops import BACKEND_ENV_VAR, available_backends, directional_gru_scan, resolve_backend, triton_available

from .naive import random_params


def test_auto_picks_fused_on_cpu_and_never_triton(monkeypatch, option_env):
    option_env("backend", None)
    x = torch.zeros(1, 2, 3, 3)
    assert resolve_backend("auto", x) == "fused"
    assert resolve_backend("auto") == "fused"
    # Even with the Triton interpreter on, "auto" keeps CPU tensors on the fused backend.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("auto", x) == "fused"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_picks_triton_on_cuda_when_importable(option_env):
    option_env("backend", None)
    want = "triton" if triton_available() else "fused"
    assert resolve_backend("auto", torch.zeros(1, device="cuda")) == want


def test_environment_variable_forces_a_backend(option_env):
    x = torch.zeros(1, 2, 3, 3)
    option_env("backend", "reference")
    assert resolve_backend("auto", x) == "reference"
    assert resolve_backend("fused", x) == "fused"  # an explicit argument wins over the variable
    option_env("backend", "nonsense")
    with pytest.raises(ValueError, match=BACKEND_ENV_VAR):
        resolve_backend("auto", x)


def test_unknown_backend_argument_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cuda")
    with pytest.raises(TypeError, match="backend"):
        resolve_backend(3)  # type: ignore[arg-type]


def test_available_backends_on_this_machine():
    names = available_backends()
    assert names[:2] == ("reference", "fused")
    assert ("triton" in names) == triton_available()


def test_auto_gives_the_fused_result(option_env):
    option_env("backend", None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    params = random_params(3, g)
    torch.testing.assert_close(
        directional_gru_scan(x, *params, "right"), directional_gru_scan(x, *params, "right", backend="fused"), rtol=0, atol=0
    )


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
@pytest.mark.parametrize("backend", ["fused", "auto"])
def test_layers_match_reference_backend(cls, backend):
    torch.manual_seed(0)
    layer = cls(3, 4, state_size=5, directions=("right", "down", "left", "up"), backend="reference").double()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    y_ref = layer(x)
    grads_ref = torch.autograd.grad(y_ref.sum(), list(layer.parameters()))
    layer.backend = backend
    y = layer(x)
    grads = torch.autograd.grad(y.sum(), list(layer.parameters()))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_layer_backend_argument_reaches_every_sweep():
    layer = SpatialDependencyLayer(2, 2, state_size=3, backend="fused")
    assert all(s.backend == "fused" for s in layer.sweeps)
    layer.backend = "reference"
    assert all(s.backend == "reference" for s in layer.sweeps)


def test_layer_under_bfloat16_autocast_matches_across_backends():
    torch.manual_seed(1)
    layer = SpatialDependencyLayer(3, 4, state_size=6, directions=("right", "down"), backend="reference")
    x = torch.randn(1, 3, 5, 6)
    outs = {}
    for backend in ("reference", "fused"):
        layer.backend = backend
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[backend] = layer(x)
    assert outs["fused"].dtype == outs["reference"].dtype
    torch.testing.assert_close(outs["fused"].float(), outs["reference"].float(), rtol=0, atol=2e-2)


def test_benchmark_naive_strategy_computes_the_same_scan():
    """The benchmark's re-statement of the published strategy must be the same maths."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scan.py"
    spec = importlib.util.spec_from_file_location("bench_scan_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_(True) for p in random_params(3, g)]
    for direction in ("right", "left", "down", "up"):
        want = directional_gru_scan(x, *params, direction, backend="reference")
        got = bench.naive_sweep(x, *params, direction)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        ga = torch.autograd.grad(got.sum(), [x, *params])
        gb = torch.autograd.grad(want.sum(), [x, *params])
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
