"""The fused backend against the reference scan and an independent per-pixel oracle."""

from __future__ import annotations

import random

import pytest
import torch

from spatialrec.ops import directional_gru_scan, valid_directions

DIRECTIONS = valid_directions(2)  # the 2D scan's four directions

from .naive import naive_scan, random_params

SHAPES = [(2, 3, 5, 5), (1, 4, 3, 6), (2, 2, 6, 2), (1, 3, 1, 4), (2, 2, 4, 1), (1, 1, 1, 1)]


def _inputs(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    return x, random_params(shape[1], g, dtype)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)).item()


def _grads(x, params, direction, backend, grad_out, wrt):
    y = directional_gru_scan(x, *params, direction, backend=backend)
    gs = torch.autograd.grad(y, wrt, grad_out, allow_unused=True)
    return y, [torch.zeros_like(t) if g is None else g for g, t in zip(gs, wrt)]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_fused_matches_naive_oracle(direction, shape):
    x, params = _inputs(shape, seed=3)
    got = directional_gru_scan(x, *params, direction, backend="fused")
    torch.testing.assert_close(got, naive_scan(x, *params, direction), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_float32_forward_and_gradients_match_reference(direction, shape):
    x, params = _inputs(shape, seed=sum(shape), dtype=torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    y_ref, g_ref = _grads(leaves[0], leaves[1:], direction, "reference", g, leaves)
    y_fus, g_fus = _grads(leaves[0], leaves[1:], direction, "fused", g, leaves)
    assert y_fus.dtype == torch.float32 and y_fus.shape == x.shape
    assert _rel_err(y_fus, y_ref) <= 1e-5
    for name, a, b in zip(("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh"), g_fus, g_ref):
        assert a.shape == b.shape, name
        assert _rel_err(a, b) <= 1e-4 or (b.abs().max() == 0 and a.abs().max() == 0), name


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fused_gradcheck_float64(direction):
    x, params = _inputs((2, 2, 3, 4), seed=7)
    leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
    fn = lambda *t: directional_gru_scan(t[0], *t[1:], direction, backend="fused")  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_fused_non_contiguous_inputs():
    x_big, params = _inputs((2, 3, 6, 10), seed=11)
    x = x_big[:, :, ::2, 1:8].transpose(2, 3)  # strided, transposed view: (2, 3, 7, 3)
    w_ih = params[0].t().contiguous().t()  # same values, column-major strides
    w_hh = torch.cat([params[1], params[1]], dim=1)[:, ::2]  # (3S, S) view with stride 2
    b_ih = torch.stack([params[2], params[2]], dim=1)[:, 0]  # (3S,) view with stride 2
    assert not (x.is_contiguous() or w_ih.is_contiguous() or w_hh.is_contiguous() or b_ih.is_contiguous())
    p = (w_ih, w_hh, b_ih, params[3])
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for direction in DIRECTIONS:
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, *p)]
        y_ref, g_ref = _grads(leaves[0], leaves[1:], direction, "reference", g, leaves)
        leaves_nc = [x.detach().requires_grad_(True)] + [t.detach().requires_grad_(True) for t in p]
        y_fus, g_fus = _grads(leaves_nc[0], leaves_nc[1:], direction, "fused", g, leaves_nc)
        torch.testing.assert_close(y_fus, y_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(g_fus, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", ["input_only", "params_only"])
def test_fused_partial_requires_grad(which):
    x, params = _inputs((2, 3, 4, 5), seed=5)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = [t.clone().requires_grad_(True) for t in (x, *params)]
    _, g_ref = _grads(full[0], full[1:], "right", "reference", g, full)
    if which == "input_only":
        xi = x.clone().requires_grad_(True)
        _, (gx,) = _grads(xi, params, "right", "fused", g, [xi])
        torch.testing.assert_close(gx, g_ref[0], rtol=1e-10, atol=1e-12)
    else:
        ps = [p.clone().requires_grad_(True) for p in params]
        _, gp = _grads(x, ps, "right", "fused", g, ps)
        for a, b in zip(gp, g_ref[1:]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_no_grad_needed_runs_forward_only():
    x, params = _inputs((1, 2, 3, 3), seed=1)
    with torch.no_grad():
        y = directional_gru_scan(x, *params, "down", backend="fused")
    assert not y.requires_grad
    torch.testing.assert_close(y, directional_gru_scan(x, *params, "down", backend="reference"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_half_inputs_compute_in_float32(dtype):
    x, params = _inputs((2, 4, 5, 6), seed=9, dtype=torch.float32)
    xh = x.to(dtype).requires_grad_(True)
    y = directional_gru_scan(xh, *params, "left", backend="fused")
    assert y.dtype == dtype
    ref = directional_gru_scan(xh.detach().float(), *params, "left", backend="reference")
    # Only the final rounding to the half dtype differs from a float32 computation.
    torch.testing.assert_close(y.float(), ref.to(dtype).float(), rtol=0, atol=1e-2)
    y.float().sum().backward()
    assert xh.grad is not None and xh.grad.dtype == dtype


def test_fused_under_autocast_matches_float32():
    x, params = _inputs((1, 3, 4, 5), seed=12, dtype=torch.float32)
    leaves = [p.clone().requires_grad_(True) for p in params]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = directional_gru_scan(x.bfloat16(), *leaves, "down", backend="fused")
    assert y.dtype == torch.bfloat16
    ref = directional_gru_scan(x.bfloat16().float(), *params, "down", backend="reference")
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=1e-2)
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in leaves)


def test_fused_randomized_shapes_match_reference():
    rng = random.Random(1234)
    for trial in range(12):
        shape = (rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 7), rng.randint(1, 7))
        direction = rng.choice(DIRECTIONS)
        x, params = _inputs(shape, seed=trial)
        leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
        g = torch.randn(shape, generator=torch.Generator().manual_seed(trial), dtype=torch.float64)
        y_ref, g_ref = _grads(leaves[0], leaves[1:], direction, "reference", g, leaves)
        y_fus, g_fus = _grads(leaves[0], leaves[1:], direction, "fused", g, leaves)
        torch.testing.assert_close(y_fus, y_ref, rtol=1e-12, atol=1e-12, msg=f"{shape} {direction}")
        for a, b in zip(g_fus, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11, msg=f"{shape} {direction}")


def test_fused_many_prior_blocks(monkeypatch):
    # Force one line per prior-term block so the block boundaries are exercised.
    from spatialrec.ops import fused

    monkeypatch.setattr(fused, "_GH_BLOCK_ELEMENTS", 1)
    x, params = _inputs((2, 2, 6, 3), seed=21)
    leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_ref, g_ref = _grads(leaves[0], leaves[1:], "up", "reference", g, leaves)
    y_fus, g_fus = _grads(leaves[0], leaves[1:], "up", "fused", g, leaves)
    torch.testing.assert_close(y_fus, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_fus, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
