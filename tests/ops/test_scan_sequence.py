"""directional_gru_scan_sequence: equal to consecutive single scans, values and gradients."""

from __future__ import annotations

import itertools

import pytest
import torch

from spatialrec import SpatialDependencyLayer
from spatialrec.ops import directional_gru_scan, directional_gru_scan_sequence, valid_directions

DIRECTIONS = valid_directions(2)  # the 2D scan's four directions

from .naive import naive_scan, random_params


def _setup(shape, n_dir, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    params = [random_params(shape[1], g, dtype) for _ in range(n_dir)]
    return x, params


def _run(x, params, directions, backend, sequence, grad_out):
    leaves = [x.clone().requires_grad_(True)] + [[t.clone().requires_grad_(True) for t in p] for p in params]
    xs, ps = leaves[0], leaves[1:]
    if sequence:
        y = directional_gru_scan_sequence(xs, [tuple(p) for p in ps], directions, backend=backend)
    else:
        y = xs
        for p, d in zip(ps, directions):
            y = directional_gru_scan(y, *p, d, backend=backend)
    flat = [xs] + [t for p in ps for t in p]
    grads = torch.autograd.grad(y, flat, grad_out, allow_unused=True)
    # A sweep over a single line leaves its parameters unused (the reference: None; fused: zeros).
    return y, [torch.zeros_like(t) if g is None else g for g, t in zip(grads, flat)]


@pytest.mark.parametrize("pair", list(itertools.product(DIRECTIONS, repeat=2)))
def test_sequence_equals_consecutive_scans_every_pair(pair):
    # Non-square so that a wrong transpose between the two layouts cannot go unnoticed.
    x, params = _setup((2, 3, 4, 6), 2, seed=DIRECTIONS.index(pair[0]) * 4 + DIRECTIONS.index(pair[1]))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y_ref, g_ref = _run(x, params, pair, "reference", False, g)
    y_seq, g_seq = _run(x, params, pair, "fused", True, g)
    torch.testing.assert_close(y_seq, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_seq, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_sequence_matches_naive_oracle_three_sweeps():
    x, params = _setup((1, 2, 5, 3), 3, seed=8)
    dirs = ("up", "left", "up")
    y = directional_gru_scan_sequence(x, params, dirs, backend="fused")
    want = x
    for p, d in zip(params, dirs):
        want = naive_scan(want, *p, d)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("directions", [("right",), ("left", "down", "right", "up"), (0, 2, 2)])
@pytest.mark.parametrize("shape", [(2, 2, 1, 5), (1, 3, 5, 1), (1, 1, 1, 1), (2, 2, 3, 4)])
def test_sequence_fused_float32_edge_shapes(directions, shape):
    names = tuple(DIRECTIONS[d] if isinstance(d, int) else d for d in directions)
    x, params = _setup(shape, len(names), seed=sum(shape), dtype=torch.float32)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    y_ref, g_ref = _run(x, params, names, "reference", False, g)
    y_seq, g_seq = _run(x, params, directions, "fused", True, g)
    torch.testing.assert_close(y_seq, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_seq, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sequence_gradcheck_float64():
    x, params = _setup((1, 2, 3, 4), 2, seed=2)
    leaves = [x.requires_grad_(True)] + [t.requires_grad_(True) for p in params for t in p]

    def fn(x, *flat):
        return directional_gru_scan_sequence(x, [flat[0:4], flat[4:8]], ("left", "up"), backend="fused")

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("which", ["x_only", "second_sweep_params_only"])
def test_sequence_partial_requires_grad(which):
    x, params = _setup((2, 2, 4, 3), 2, seed=4)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    _, g_ref = _run(x, params, ("right", "down"), "reference", False, g)
    if which == "x_only":
        xi = x.clone().requires_grad_(True)
        y = directional_gru_scan_sequence(xi, params, ("right", "down"), backend="fused")
        (gx,) = torch.autograd.grad(y, [xi], g)
        torch.testing.assert_close(gx, g_ref[0], rtol=1e-10, atol=1e-12)
    else:
        p2 = [t.clone().requires_grad_(True) for t in params[1]]
        y = directional_gru_scan_sequence(x, [params[0], tuple(p2)], ("right", "down"), backend="fused")
        got = torch.autograd.grad(y, p2, g)
        for a, b in zip(got, g_ref[5:]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sequence_backward_twice_with_retain_graph():
    x, params = _setup((1, 2, 3, 3), 2, seed=9)
    xi = x.clone().requires_grad_(True)
    y = directional_gru_scan_sequence(xi, params, ("down", "right"), backend="fused")
    (g1,) = torch.autograd.grad(y.sum(), [xi], retain_graph=True)
    (g2,) = torch.autograd.grad(y.sum(), [xi])
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_sequence_half_input_and_autocast():
    x, params = _setup((1, 3, 4, 5), 2, seed=10, dtype=torch.float32)
    xb = x.bfloat16().requires_grad_(True)
    y = directional_gru_scan_sequence(xb, params, ("right", "down"), backend="fused")
    assert y.dtype == torch.bfloat16
    ref = directional_gru_scan_sequence(x.bfloat16().float(), params, ("right", "down"), backend="reference")
    torch.testing.assert_close(y.float(), ref.bfloat16().float(), rtol=0, atol=1e-2)
    y.float().sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16
    leaves = [tuple(t.clone().requires_grad_(True) for t in p) for p in params]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = directional_gru_scan_sequence(x.bfloat16(), leaves, ("right", "down"), backend="fused")
    torch.testing.assert_close(ya.float(), ref, rtol=0, atol=1e-2)
    ya.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for p in leaves for t in p)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_sequence_other_backends_loop(backend):
    x, params = _setup((1, 2, 3, 4), 2, seed=1)
    y = directional_gru_scan_sequence(x, params, ("up", "left"), backend=backend)
    want = directional_gru_scan(directional_gru_scan(x, *params[0], "up", backend="reference"), *params[1], "left", backend="reference")
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_sequence_validates_arguments():
    x, params = _setup((1, 2, 3, 4), 2, seed=1)
    with pytest.raises(ValueError, match="params has 2 entries but directions has 1"):
        directional_gru_scan_sequence(x, params, ("down",))
    with pytest.raises(TypeError, match=r"params\[1\] must be a tuple"):
        directional_gru_scan_sequence(x, [params[0], params[1][:3]], ("down", "up"))
    with pytest.raises(TypeError, match="params must be a sequence"):
        directional_gru_scan_sequence(x, params[0][0], ("down",))
    with pytest.raises(ValueError, match="weight_hh has shape"):
        directional_gru_scan_sequence(x, [params[0], (params[1][0], params[1][0], params[1][2], params[1][3])], ("down", "up"))
    with pytest.raises(ValueError, match="at least one direction"):
        directional_gru_scan_sequence(x, [], ())
    with pytest.raises(ValueError, match="not a direction"):
        directional_gru_scan_sequence(x, params, ("down", "sideways"))


@pytest.mark.parametrize("transposed", [False, True])
def test_layer_fused_sequence_matches_reference_layer(transposed):
    torch.manual_seed(0)
    kw = dict(stride=2, transposed=True, output_padding=1) if transposed else {}
    layer = SpatialDependencyLayer(3, 4, state_size=5, directions=("right", "up", "left"), **kw).double()
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    outs = []
    for backend in ("reference", "fused"):
        layer.backend = backend
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        y.pow(2).sum().backward()
        outs.append((y.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-9, atol=1e-11)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_layer_mixed_backends_runs_sweeps_one_by_one():
    torch.manual_seed(1)
    layer = SpatialDependencyLayer(2, 2, state_size=3, directions=("down", "right"))
    layer.sweeps[0].backend = "reference"
    layer.sweeps[1].backend = "fused"
    x = torch.randn(1, 2, 4, 5)
    y = layer(x)
    layer.backend = "reference"
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-6)


def test_layer_fused_cpu_projection_matches_the_convolution():
    # The project-out of a fused CPU layer must be the layer's 1x1 convolution, forward and
    # backward. The cell is the one the reference below computes (serial, prior carry): new
    # layers default to the line carry side by side.
    torch.manual_seed(2)
    layer = SpatialDependencyLayer(3, 4, state_size=6, directions=("down", "left"), carry="prior", composition="serial").double()
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    layer.backend = "fused"
    y = layer(x)
    assert y.is_contiguous()
    h = torch.tanh(layer.project_in(x))
    params = [(s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh) for s in layer.sweeps]
    want = layer.project_out(directional_gru_scan_sequence(h, params, layer.directions, backend="reference"))
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, list(layer.parameters()), g)
    ref = torch.autograd.grad(want, list(layer.parameters()), g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_jit_trace_of_a_fused_cpu_layer_passes_its_own_check():
    # torch.jit.trace re-runs the traced call without grad to check it: what the fused scan keeps
    # for its backward must not depend on grad mode while tracing (it keeps nothing then).
    import warnings

    torch.manual_seed(3)
    layer = SpatialDependencyLayer(3, 4, state_size=6, backend="fused")
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation warning for jit.trace
        traced = torch.jit.trace(layer, x)
    torch.testing.assert_close(traced(x), layer(x))
