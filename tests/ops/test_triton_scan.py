"""The Triton backend against the reference scan.

Without a GPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, which must be set
before the kernels are defined, hence at import of this module), on tiny sizes: it is slow.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="Triton is not installed (pip install 'spatialrec[triton]')")

from spatialrec.ops import directional_gru_scan, valid_directions  # noqa: E402

from .naive import random_params  # noqa: E402

DIRECTIONS = valid_directions(2)  # the 2D scan's four directions

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1: the Triton kernels cannot run", allow_module_level=True)


def _inputs(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    return [t.to(DEVICE) for t in (x, *random_params(shape[1], g, dtype))]


def _grads(leaves, direction, backend, grad_out, carry="prior"):
    y = directional_gru_scan(leaves[0], *leaves[1:], direction, backend=backend, carry=carry)
    want = [t for t in leaves if t.requires_grad]
    gs = torch.autograd.grad(y, want, grad_out, allow_unused=True)
    return y, [torch.zeros_like(t) if g is None else g for g, t in zip(gs, want)]


def _rel_err(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 3, 5)])
def test_triton_float64_matches_reference(direction, shape, carry):
    tensors = _inputs(shape, seed=len(direction) + shape[3])
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    y_ref, g_ref = _grads(leaves, direction, "reference", g, carry)
    y_tri, g_tri = _grads(leaves, direction, "triton", g, carry)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-11, atol=1e-12)
    for a, b in zip(g_tri, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_triton_float32_multi_block_tiles():
    # M = B * W = 70 rows and S = 20 > 16: several row tiles, masked column tiles, K tiles of 32.
    shape = (2, 20, 3, 35)
    tensors = _inputs(shape, seed=3, dtype=torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    y_ref, g_ref = _grads(leaves, "down", "reference", g)
    y_tri, g_tri = _grads(leaves, "down", "triton", g)
    assert y_tri.dtype == torch.float32
    assert _rel_err(y_tri, y_ref) <= 1e-5
    for a, b in zip(g_tri, g_ref):
        assert _rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("which", ["input_only", "params_only"])
def test_triton_partial_requires_grad_and_non_contiguous(which):
    x, *params = _inputs((1, 2, 6, 8), seed=5)
    x = x[:, :, ::2, 1:6]  # non-contiguous (1, 2, 3, 5)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(DEVICE)
    full = [t.detach().clone().requires_grad_(True) for t in (x, *params)]
    _, g_ref = _grads(full, "left", "reference", g)
    if which == "input_only":
        leaves = [x.detach().requires_grad_(True), *params]
        _, (gx,) = _grads(leaves, "left", "triton", g)
        torch.testing.assert_close(gx, g_ref[0], rtol=1e-9, atol=1e-11)
    else:
        leaves = [x, *(p.clone().requires_grad_(True) for p in params)]
        _, gp = _grads(leaves, "left", "triton", g)
        for a, b in zip(gp, g_ref[1:]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_triton_bfloat16_input_returns_bfloat16():
    x, *params = _inputs((1, 3, 3, 4), seed=6, dtype=torch.float32)
    y = directional_gru_scan(x.bfloat16(), *params, "up", backend="triton")
    assert y.dtype == torch.bfloat16
    ref = directional_gru_scan(x.bfloat16().float(), *params, "up", backend="reference")
    # bfloat16 inputs feed the dots with bf16-rounded operands (tensor cores), float32 accumulation
    # and gate arithmetic: a few bf16 roundings (2^-8 relative) per line. docs/kernels.md.
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=2e-2)


def test_triton_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    from spatialrec.ops import triton as triton_backend

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, *params = (t.cpu() for t in _inputs((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="CUDA"):
        triton_backend.triton_directional_gru_scan(x, *params, "down")


# ---- 3D: the same kernels with the 9-neighbour stencil ------------------------------------------

DIRECTIONS_3D = valid_directions(3)


def _inputs3d(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = shape[1]
    x = torch.randn(*shape, generator=g, dtype=dtype)
    _, w_hh, b_ih, b_hh = random_params(s, g, dtype)
    w_ih = (torch.rand(3 * s, 9 * s, generator=g, dtype=dtype) * 2 - 1) * (2.0 / (3 * s) ** 0.5)
    return [t.to(DEVICE) for t in (x, w_ih, w_hh, b_ih, b_hh)]


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("direction", DIRECTIONS_3D)
def test_triton3d_float64_matches_reference(direction, carry):
    # Odd sizes on every axis, so each direction sees non-square planes with masked tiles.
    shape = (2, 3, 3, 4, 5)
    leaves = [t.clone().requires_grad_(True) for t in _inputs3d(shape, seed=len(direction))]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(DEVICE)
    y_ref, g_ref = _grads(leaves, direction, "reference", g, carry)
    y_tri, g_tri = _grads(leaves, direction, "triton", g, carry)
    torch.testing.assert_close(y_tri, y_ref, rtol=1e-11, atol=1e-12)
    for a, b in zip(g_tri, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_triton3d_state_not_a_block_multiple(dtype, tol):
    # S = 20: two column tiles of 16, the second masked; K tiles of 16 over 9 slots of 20.
    shape = (1, 20, 3, 3, 2)
    x, *params = _inputs3d(shape, seed=11, dtype=torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (x.to(dtype), *params)]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    y_ref, g_ref = _grads([leaves[0].detach().float().requires_grad_(True), *leaves[1:]], "out", "reference", g)
    y_tri, g_tri = _grads(leaves, "out", "triton", g.to(dtype))
    assert y_tri.dtype == dtype
    assert _rel_err(y_tri, y_ref) <= tol
    for a, b in zip(g_tri, g_ref):
        assert _rel_err(a, b) <= 10 * tol


def test_triton3d_single_plane_and_size_one_axes():
    for shape, direction in [((1, 2, 1, 3, 4), "in"), ((2, 2, 4, 1, 1), "in"), ((1, 2, 3, 1, 5), "down")]:
        leaves = [t.clone().requires_grad_(True) for t in _inputs3d(shape, seed=sum(shape))]
        g = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(DEVICE)
        y_ref, g_ref = _grads(leaves, direction, "reference", g)
        y_tri, g_tri = _grads(leaves, direction, "triton", g)
        torch.testing.assert_close(y_tri, y_ref, rtol=1e-11, atol=1e-12)
        for a, b in zip(g_tri, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (1, 2, 2, 3, 2)])
def test_triton_gradcheck(shape):
    inputs = _inputs(shape, seed=12) if len(shape) == 4 else _inputs3d(shape, seed=12)
    leaves = tuple(t.clone().requires_grad_(True) for t in inputs)
    direction = "left" if len(shape) == 4 else "in"

    def f(*args):
        return directional_gru_scan(*args, direction, backend="triton")

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_precision_option(option_env):
    from spatialrec.ops import triton as triton_backend

    option_env("triton_precision", None)
    assert triton_backend.dot_mode(torch.float32, torch.float32) == triton_backend.IEEE
    assert triton_backend.dot_mode(torch.float16, torch.float32) == triton_backend.FP16
    assert triton_backend.dot_mode(torch.bfloat16, torch.float32) in (triton_backend.BF16, triton_backend.BF16_EMULATED)
    assert triton_backend.dot_mode(torch.float64, torch.float64) == triton_backend.IEEE
    option_env("triton_precision", "TF32")
    assert triton_backend.dot_mode(torch.float32, torch.float32) == triton_backend.TF32
    assert triton_backend.dot_mode(torch.float64, torch.float64) == triton_backend.IEEE  # float64 stays exact
    # The interpreter computes "tf32" dots exactly; on a GPU the documented tolerance is 2e-3.
    x, *params = _inputs((1, 20, 3, 5), seed=13, dtype=torch.float32)
    y = directional_gru_scan(x, *params, "down", backend="triton")
    assert _rel_err(y, directional_gru_scan(x, *params, "down", backend="reference")) <= 2e-3
    option_env("triton_precision", "fp8")
    with pytest.raises(ValueError, match="SPATIALREC_TRITON_PRECISION='fp8'"):
        directional_gru_scan(x, *params, "down", backend="triton")


@pytest.mark.parametrize("dtype", [torch.float16])
def test_triton_float16_uses_half_operands(dtype):
    x, *params = _inputs((1, 20, 3, 5), seed=14, dtype=torch.float32)
    y = directional_gru_scan(x.to(dtype), *params, "right", backend="triton")
    ref = directional_gru_scan(x.to(dtype).float(), *params, "right", backend="reference")
    assert y.dtype == dtype
    assert _rel_err(y, ref) <= 5e-3
