"""The reference scan against an independent naive oracle, plus causality, gradients and errors."""

from __future__ import annotations

import pytest
import torch

from spatialrec.ops import directional_gru_scan, valid_directions

DIRECTIONS = valid_directions(2)  # the 2D scan's four directions

from .naive import naive_scan, random_params

SHAPES = [(2, 3, 4, 4), (1, 2, 3, 5), (2, 2, 5, 3), (1, 1, 1, 4), (1, 2, 4, 1)]


def _inputs(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    return x, random_params(shape[1], g, dtype)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_naive_oracle(direction, shape):
    x, params = _inputs(shape, seed=hash((direction, shape)) % 1000)
    got = directional_gru_scan(x, *params, direction, backend="reference")
    want = naive_scan(x, *params, direction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("code,name", list(enumerate(DIRECTIONS)))
def test_published_codes_alias_names(code, name):
    x, params = _inputs((1, 2, 3, 4))
    torch.testing.assert_close(
        directional_gru_scan(x, *params, code, backend="reference"),
        directional_gru_scan(x, *params, name, backend="reference"),
    )
    assert name == ("right", "left", "down", "up")[code]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_first_line_unchanged_and_single_line_passthrough(direction):
    x, params = _inputs((2, 3, 4, 5))
    y = directional_gru_scan(x, *params, direction, backend="reference")
    first = {"down": (slice(None), slice(None), 0), "up": (slice(None), slice(None), -1),
             "right": (slice(None), slice(None), slice(None), 0),
             "left": (slice(None), slice(None), slice(None), -1)}[direction]  # fmt: skip
    assert torch.equal(y[first], x[first])
    assert not torch.allclose(y, x)
    line = x[:, :, :1, :] if direction in ("down", "up") else x[:, :, :, :1]
    assert torch.equal(directional_gru_scan(line, *params, direction, backend="reference"), line)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_causality(direction):
    """Perturbing line k changes no line upstream of k and does change the lines downstream."""
    x, params = _inputs((1, 2, 6, 7))
    vertical = direction in ("down", "up")
    n = x.shape[2] if vertical else x.shape[3]
    k = 3
    x2 = x.clone()
    if vertical:
        x2[:, :, k, :] += 1.0
    else:
        x2[:, :, :, k] += 1.0
    y1 = directional_gru_scan(x, *params, direction, backend="reference")
    y2 = directional_gru_scan(x2, *params, direction, backend="reference")
    changed = (y1 - y2).abs().amax(dim=(0, 1, 3) if vertical else (0, 1, 2)) > 0
    forward = direction in ("down", "right")
    upstream = range(0, k) if forward else range(k + 1, n)
    downstream = range(k, n) if forward else range(0, k + 1)
    assert not any(changed[i] for i in upstream), changed
    assert all(changed[i] for i in downstream), changed


def test_receptive_field_spreads_one_pixel_per_line():
    """`down`: output (i, j) depends on input (i', j') exactly when i' <= i and |j - j'| <= i - i'."""
    s = 2
    _, params = _inputs((1, s, 1, 1))
    x = torch.randn(1, s, 5, 9, dtype=torch.float64, requires_grad=True)
    y = directional_gru_scan(x, *params, "down", backend="reference")
    (grad,) = torch.autograd.grad(y[0, :, 4, 4].sum(), x)
    reach = grad.abs().sum(dim=(0, 1)) > 0
    for i in range(5):
        for j in range(9):
            assert bool(reach[i, j]) == (i == 4 and j == 4 or (i < 4 and abs(j - 4) <= 4 - i)), (i, j)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradcheck(direction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    params = tuple(p.requires_grad_() for p in random_params(2, g))
    assert torch.autograd.gradcheck(
        lambda x, *p: directional_gru_scan(x, *p, direction, backend="reference"), (x, *params)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_follow_float32(dtype):
    x, params = _inputs((2, 4, 5, 6), dtype=torch.float32)
    want = directional_gru_scan(x.to(dtype).float(), *params, "down", backend="reference")
    got = directional_gru_scan(x.to(dtype), *params, "down", backend="reference")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


def test_autocast_does_not_lower_gate_precision():
    x, params = _inputs((1, 4, 5, 6), dtype=torch.float32)
    want = directional_gru_scan(x, *params, "right", backend="reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = directional_gru_scan(x, *params, "right", backend="reference")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def _good():
    return _inputs((1, 2, 3, 3), dtype=torch.float32)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.update(x=torch.randn(2, 3, 3)), ValueError, r"x must have shape \(B, S, H, W\)"),
        (lambda a: a.update(x=torch.randn(1, 2, 0, 3)), ValueError, "non-zero"),
        (lambda a: a.update(x=torch.ones(1, 2, 3, 3, dtype=torch.int64)), TypeError, "floating-point"),
        (lambda a: a.update(x=[[1.0]]), TypeError, "torch.Tensor"),
        (lambda a: a.update(weight_ih=torch.randn(6, 5)), ValueError, r"weight_ih has shape \(6, 5\), expected \(6, 6\)"),
        (lambda a: a.update(weight_hh=torch.randn(6, 6)), ValueError, r"weight_hh has shape \(6, 6\), expected \(6, 2\)"),
        (lambda a: a.update(bias_ih=torch.randn(5)), ValueError, "bias_ih has shape"),
        (lambda a: a.update(bias_hh=torch.randn(6, 1)), ValueError, "bias_hh has shape"),
        (lambda a: a.update(bias_hh=torch.ones(6, dtype=torch.int32)), TypeError, "bias_hh must have a floating-point"),
        (lambda a: a.update(direction="diagonal"), ValueError, "'diagonal' is not a direction"),
        (lambda a: a.update(direction=4), ValueError, "not a published direction code"),
        (lambda a: a.update(direction=1.5), TypeError, "direction must be"),
        (lambda a: a.update(backend="cuda-magic"), ValueError, "'cuda-magic' is not a backend"),
    ],
)
def test_bad_inputs_raise_clear_errors(mutate, exc, match):
    x, (w_ih, w_hh, b_ih, b_hh) = _good()
    args = dict(x=x, weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh, direction="down", backend="reference")
    mutate(args)
    with pytest.raises(exc, match=match):
        directional_gru_scan(**args)


def test_environment_variable_selects_backend(option_env):
    from spatialrec.ops import resolve_backend

    option_env("backend", "reference")
    assert resolve_backend("auto") == "reference"
    assert resolve_backend("fused") == "fused"  # an explicit argument wins over the variable
    option_env("backend", "nonsense")
    with pytest.raises(ValueError, match="SPATIALREC_BACKEND='nonsense'"):
        resolve_backend("auto")
