"""The safe default: a Triton kernel that fails to compile or launch sends "auto" to "fused" on
that device (one warning naming the error, state in spatialrec.options); out-of-memory, input
errors and interrupts reach the caller; an explicit backend="triton" raises.

The machine has no GPU: "auto" is made to pick Triton for CPU tensors by replacing
``spatialrec.ops.scan.triton_device``, and the Triton entry point
``spatialrec.ops.triton.triton_directional_gru_scan`` by a stand-in that raises."""

from __future__ import annotations

import warnings

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install 'spatialrec[triton]')")

from triton.runtime.errors import OutOfResources  # noqa: E402

from spatialrec import options  # noqa: E402
from spatialrec.ops import directional_gru_scan, directional_gru_scan_sequence, resolve_backend  # noqa: E402
from spatialrec.ops import scan as scan_module  # noqa: E402

from .naive import random_params  # noqa: E402


class _FailingEntryPoint:
    """Stands in for the Triton scan: raises ``error`` (by default Triton's own error for tiles
    too large for the GPU's shared memory, as a failed compilation would) and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException = OutOfResources(232448, 101376, "shared memory")

    def __call__(self, *args):
        self.calls += 1
        raise self.error


@pytest.fixture
def auto_picks_triton(monkeypatch, option_env):
    """"auto" picks Triton for any tensor (as for CUDA tensors on a GPU), Triton's interpreter
    accepts CPU tensors, no device has fallen back before or after the test."""
    option_env("backend", None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(scan_module, "triton_device", lambda x: True)
    options.reset_triton_fallback()
    yield
    options.reset_triton_fallback()


@pytest.fixture
def failing_triton(auto_picks_triton, monkeypatch):
    from spatialrec.ops import triton as triton_backend

    entry = _FailingEntryPoint()
    monkeypatch.setattr(triton_backend, "triton_directional_gru_scan", entry)
    return entry


def _inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    w_ih, w_hh, b_ih, b_hh = random_params(shape[1], g, torch.float32)
    if len(shape) == 5:
        w_ih = torch.randn(3 * shape[1], 9 * shape[1], generator=g) * 0.3
    return x, (w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (1, 3, 3, 4, 2)])
def test_auto_falls_back_to_fused_with_one_warning(failing_triton, shape):
    x, params = _inputs(shape, 0)
    assert resolve_backend("auto", x) == "triton"
    with pytest.warns(RuntimeWarning, match="OutOfResources") as record:
        y = directional_gru_scan(x, *params, "down")
    assert len(record) == 1
    assert "shared memory" in str(record[0].message) and "cpu" in str(record[0].message)
    want = directional_gru_scan(x, *params, "down", backend="fused")
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    assert list(options.triton_fallback()) == ["cpu"]
    assert options.triton_fallback()["cpu"].startswith("OutOfResources: out of resource: shared memory")
    # From then on "auto" resolves to fused directly: no second warning, no second compile attempt.
    calls = failing_triton.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = directional_gru_scan(x, *params, "down")
        directional_gru_scan_sequence(x, [params] * 2, ("right", "down"))
    torch.testing.assert_close(y2, want, rtol=0, atol=0)
    assert failing_triton.calls == calls
    assert resolve_backend("auto", x) == "fused"


def test_the_fallback_is_per_device_and_resettable(failing_triton):
    x, params = _inputs((1, 3, 4, 5), 5)
    with pytest.warns(RuntimeWarning, match="falls back"):
        directional_gru_scan(x, *params, "down")
    # Another device (the meta device, which no kernel runs on) still gets Triton.
    assert resolve_backend("auto", x.to("meta")) == "triton"
    assert resolve_backend("auto", x) == "fused"
    options.reset_triton_fallback("meta")  # not marked: nothing changes
    assert resolve_backend("auto", x) == "fused"
    options.reset_triton_fallback("cpu")
    assert options.triton_fallback() == {}
    assert resolve_backend("auto", x) == "triton"
    # After a reset the next failure warns again, once.
    with pytest.warns(RuntimeWarning, match="falls back") as record:
        directional_gru_scan(x, *params, "down")
    assert len(record) == 1
    options.reset_triton_fallback()
    assert resolve_backend("auto", x) == "triton"


def test_a_device_can_be_kept_off_triton_by_hand(auto_picks_triton):
    x = torch.zeros(1, 2, 3, 3)
    assert options.mark_triton_fallback("cpu", "kept off by hand")
    assert not options.mark_triton_fallback(torch.device("cpu"), "again")  # the first reason stays
    assert options.triton_fallback() == {"cpu": "kept off by hand"}
    assert resolve_backend("auto", x) == "fused"
    with pytest.raises(TypeError, match="device"):
        options.mark_triton_fallback(0, "why")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="device"):
        options.reset_triton_fallback(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("Triton Error [CUDA]: out of memory"),
        KeyboardInterrupt(),
        ValueError("x must be ..."),
        TypeError("weight_ih must be ..."),
    ],
    ids=["cuda-oom", "driver-oom", "interrupt", "value-error", "type-error"],
)
def test_errors_that_are_not_triton_failures_reach_the_caller(failing_triton, error):
    failing_triton.error = error
    x, params = _inputs((1, 3, 4, 5), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(type(error)):
            directional_gru_scan(x, *params, "down")
        with pytest.raises(type(error)):
            directional_gru_scan_sequence(x, [params] * 2, ("right", "down"))
    assert options.triton_fallback() == {}
    assert resolve_backend("auto", x) == "triton"  # the next (smaller) batch tries Triton again


def test_sequence_under_auto_falls_back(failing_triton):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 5, generator=g)
    params = [random_params(3, g, torch.float32) for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="falls back"):
        y = directional_gru_scan_sequence(x, params, ("right", "down"))
    want = directional_gru_scan_sequence(x, params, ("right", "down"), backend="fused")
    torch.testing.assert_close(y, want)


def test_explicit_triton_raises(failing_triton):
    x, params = _inputs((1, 3, 4, 5), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(OutOfResources):
            directional_gru_scan(x, *params, "down", backend="triton")
    assert options.triton_fallback() == {}  # an explicit choice does not disable "auto"'s triton


def test_the_backend_option_triton_is_an_explicit_choice(failing_triton, option_env):
    x, params = _inputs((1, 3, 4, 5), 3)
    with options.override(backend="triton"), pytest.raises(OutOfResources):
        directional_gru_scan(x, *params, "down")
    option_env("backend", "triton")
    with pytest.raises(OutOfResources):
        directional_gru_scan(x, *params, "down")
    assert options.triton_fallback() == {}


def test_input_errors_of_the_real_kernel_are_not_swallowed(auto_picks_triton, option_env):
    x, params = _inputs((1, 3, 4, 5), 4)
    option_env("triton_precision", "fp8")
    with pytest.raises(ValueError, match="SPATIALREC_TRITON_PRECISION='fp8'"):
        directional_gru_scan(x, *params, "down")
    assert options.triton_fallback() == {}
