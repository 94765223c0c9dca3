"""The safe default: a Triton kernel that fails to compile or launch sends "auto" to "fused"
(one warning naming the error); an explicit backend="triton" raises."""

from __future__ import annotations

import warnings

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install 'spatialrec[triton]')")

from triton.runtime.errors import OutOfResources  # noqa: E402

from spatialrec.ops import BACKEND_ENV_VAR, directional_gru_scan, directional_gru_scan_sequence  # noqa: E402
from spatialrec.ops import scan as scan_module  # noqa: E402

from .naive import random_params  # noqa: E402


class _FailingKernel:
    """Stands in for a Triton kernel whose compilation fails (as it would on a GPU whose shared
    memory is too small for the tiles): launching raises Triton's own error."""

    def __init__(self) -> None:
        self.launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            raise OutOfResources(232448, 101376, "shared memory")

        return launch

    def warmup(self, *args, **kwargs):  # pragma: no cover - the forward fails first
        raise OutOfResources(232448, 101376, "shared memory")


@pytest.fixture
def failing_triton(monkeypatch):
    """A CPU setup where "auto" picks triton (as on a GPU) and the forward kernel fails to compile."""
    from spatialrec.ops import triton as triton_backend

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # let the Triton backend accept CPU tensors
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(scan_module, "_triton_device", lambda x: True)
    monkeypatch.setattr(scan_module, "_TRITON_FAILURE", None)
    kernel = _FailingKernel()
    monkeypatch.setattr(triton_backend, "_fwd_line", kernel)
    return kernel


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (1, 3, 3, 4, 2)])
def test_auto_falls_back_to_fused_with_one_warning(failing_triton, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    w_ih, w_hh, b_ih, b_hh = random_params(3, g, torch.float32)
    if len(shape) == 5:
        w_ih = torch.randn(9, 27, generator=g) * 0.3
    assert scan_module.resolve_backend("auto", x) == "triton"
    with pytest.warns(RuntimeWarning, match="OutOfResources") as record:
        y = directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "down")
    assert len(record) == 1
    assert "shared memory" in str(record[0].message)
    want = directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "down", backend="fused")
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    # From then on "auto" resolves to fused directly: no second warning, no second compile attempt.
    launches = failing_triton.launches
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "down")
        directional_gru_scan_sequence(x, [(w_ih, w_hh, b_ih, b_hh)] * 2, ("right", "down"))
    torch.testing.assert_close(y2, want, rtol=0, atol=0)
    assert failing_triton.launches == launches
    assert scan_module.resolve_backend("auto", x) == "fused"


def test_sequence_under_auto_falls_back(failing_triton):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 5, generator=g)
    params = [random_params(3, g, torch.float32) for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="falls back"):
        y = directional_gru_scan_sequence(x, params, ("right", "down"))
    want = directional_gru_scan_sequence(x, params, ("right", "down"), backend="fused")
    torch.testing.assert_close(y, want)


def test_explicit_triton_raises(failing_triton):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 4, 5, generator=g)
    params = random_params(3, g, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(OutOfResources):
            directional_gru_scan(x, *params, "down", backend="triton")
    assert scan_module._TRITON_FAILURE is None  # an explicit choice does not disable "auto"'s triton


def test_environment_variable_triton_is_an_explicit_choice(failing_triton, monkeypatch):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 4, 5, generator=g)
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    with pytest.raises(OutOfResources):
        directional_gru_scan(x, *random_params(3, g, torch.float32), "down")


def test_input_errors_are_not_swallowed_by_the_fallback(failing_triton, monkeypatch):
    from spatialrec.ops.triton import PRECISION_ENV_VAR

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 4, 5, generator=g)
    monkeypatch.setenv(PRECISION_ENV_VAR, "fp8")
    with pytest.raises(ValueError, match=PRECISION_ENV_VAR):
        directional_gru_scan(x, *random_params(3, g, torch.float32), "down")
    assert scan_module._TRITON_FAILURE is None
