"""The fused backend against the reference scan and an independent per-pixel oracle."""

from __future__ import annotations

import random

import pytest
import torch

from spatialrec import options
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


# --- What a training forward keeps: the gates (default) or only the states -----------------------


def _sequence_grads(x, params, directions, grad_out):
    from spatialrec.ops import directional_gru_scan_sequence

    leaves = [x.clone().requires_grad_(True)] + [[t.clone().requires_grad_(True) for t in p] for p in params]
    y = directional_gru_scan_sequence(leaves[0], [tuple(p) for p in leaves[1:]], directions, backend="fused")
    wrt = [leaves[0]] + [t for p in leaves[1:] for t in p]
    return y.detach(), torch.autograd.grad(y, wrt, grad_out)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fused_kept_and_recomputed_gates_give_the_same_gradients(monkeypatch, direction):
    from spatialrec.ops import fused

    monkeypatch.setattr(fused, "_GH_BLOCK_ELEMENTS", 40)  # several prior blocks per sweep
    x, params = _inputs((2, 3, 6, 5), seed=31)
    leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y_ref, g_ref = _grads(leaves[0], leaves[1:], direction, "reference", g, leaves)
    runs = {}
    for mode in ("save", "recompute"):
        with options.override(fused_gates=mode):
            runs[mode] = _grads(leaves[0], leaves[1:], direction, "fused", g, leaves)
            x2, p2 = _inputs((1, 3, 4, 5), seed=32)
            runs[mode + "-seq"] = _sequence_grads(x2, [p2, params], ("down", direction), torch.ones(1, 3, 4, 5, dtype=torch.float64))
    for mode in ("save", "recompute"):
        y, grads = runs[mode]
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
    for a, b in zip(runs["save-seq"][1], runs["recompute-seq"][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_fused_keeps_gates_only_when_a_backward_follows(monkeypatch):
    from spatialrec.ops import fused

    kept: list[bool] = []
    real = fused._forward_lines

    def spy(xs, params, keep_gates=False, carry="prior"):
        states, gates = real(xs, params, keep_gates, carry)
        kept.append(gates is not None)
        assert (gates is not None) == keep_gates
        return states, gates

    monkeypatch.setattr(fused, "_forward_lines", spy)
    x, params = _inputs((1, 2, 4, 3), seed=2)
    with torch.no_grad():
        directional_gru_scan(x, *params, "down", backend="fused")  # inference
    directional_gru_scan(x, *params, "down", backend="fused")  # nothing requires grad
    p_grad = [t.clone().requires_grad_(True) for t in params]
    directional_gru_scan(x, *p_grad, "right", backend="fused").sum().backward()  # training
    with options.override(fused_gates="recompute"):
        directional_gru_scan(x, *p_grad, "right", backend="fused").sum().backward()
    assert kept == [False, False, True, False]


def test_fused_gates_mode_rejects_an_unknown_value(option_env):
    x, params = _inputs((1, 2, 3, 3), seed=3)
    p_grad = [t.clone().requires_grad_(True) for t in params]
    option_env("fused_gates", "fast")
    with pytest.raises(ValueError, match="SPATIALREC_FUSED_GATES='fast'"):
        directional_gru_scan(x, *p_grad, "down", backend="fused")
    option_env("fused_gates", " Recompute ")
    directional_gru_scan(x, *p_grad, "down", backend="fused").sum().backward()
    with pytest.raises(ValueError, match="fused_gates='fast'"):
        options.set_fused_gates("fast")


# --- The layer's 1x1 projection of channels-last states --------------------------------------


def test_project_channels_last_is_the_1x1_convolution():
    from spatialrec.ops.fused import project_channels_last

    g = torch.Generator().manual_seed(4)
    h = torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 5, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(2, generator=g, dtype=torch.float64)
    for bias in (b, None):
        y = project_channels_last(h, w, bias)
        assert y.is_contiguous()
        torch.testing.assert_close(y, torch.nn.functional.conv2d(h, w, bias), rtol=1e-13, atol=1e-13)
    leaves = [t.clone().requires_grad_(True) for t in (h, w, b)]
    assert torch.autograd.gradcheck(project_channels_last, tuple(leaves))
    dh = torch.autograd.grad(project_channels_last(*leaves).sum(), leaves[0])[0]
    assert dh.permute(0, 2, 3, 1).is_contiguous()  # what the fused scan's backward reads best
    with pytest.raises(ValueError, match="channels-last"):
        project_channels_last(h.contiguous(), w, b)


def test_tanh_in_place_matches_torch_tanh():
    from spatialrec.ops.fused import tanh_

    g = torch.Generator().manual_seed(6)
    for dtype, tol in ((torch.float32, 3e-7), (torch.float64, 1e-15)):
        v = torch.randn(3, 4, 5, generator=g, dtype=dtype) * 4
        v[0, 0, :3] = torch.tensor([0.0, 1e-30, -40.0], dtype=dtype)  # zero, tiny, saturated
        leaf = v.clone().requires_grad_(True)
        y = tanh_(leaf.clone())
        torch.testing.assert_close(y, torch.tanh(v), rtol=0, atol=tol)
        g_out = torch.randn(v.shape, generator=g, dtype=dtype)
        (dv,) = torch.autograd.grad(y, leaf, g_out)
        torch.testing.assert_close(dv, g_out * (1 - torch.tanh(v) ** 2), rtol=0, atol=10 * tol)
    half = torch.randn(4, dtype=torch.bfloat16)
    torch.testing.assert_close(tanh_(half.clone()), torch.tanh(half), rtol=0, atol=0)  # falls back to tanh_
