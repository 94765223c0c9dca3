"""SpatialDependencyLayer, ResidualSDN and DirectionalGRU2d: maths, shapes, state and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spatialrec import DirectionalGRU2d, ResidualSDN, SpatialDependencyLayer
from spatialrec.ops import directional_gru_scan


def test_directional_gru_parameters_and_init():
    m = DirectionalGRU2d(5, 3)
    assert m.direction == "up"
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"weight_ih": (15, 15), "weight_hh": (15, 5), "bias_ih": (15,), "bias_hh": (15,)}
    bound = 1 / math.sqrt(5)
    for p in m.parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.5 * bound
    x = torch.randn(2, 5, 4, 6)
    assert m.carry == "line"  # the library's cell
    torch.testing.assert_close(m(x), directional_gru_scan(x, m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh, "up", carry="line"))
    assert "direction='up'" in repr(m) and "carry='line'" in repr(m)
    m.carry = "prior"
    torch.testing.assert_close(m(x), directional_gru_scan(x, m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh, "up"))


@pytest.mark.parametrize("carry", ["prior", "line"])
def test_layer_composes_directions_in_order(carry):
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=6, directions=(0, "down", "down"), carry=carry, composition="serial")
    x = torch.randn(2, 3, 7, 9)
    h = torch.tanh(layer.project_in(x))
    for k, d in enumerate(("right", "down", "down")):
        s = layer.sweeps[k]
        h = directional_gru_scan(h, s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh, d, carry=carry)
    torch.testing.assert_close(layer(x), layer.project_out(h))
    # order matters: down-then-right is a different function from right-then-down
    swapped = SpatialDependencyLayer(3, 4, state_size=6, directions=("down", "right"), carry=carry, composition="serial")
    orig = SpatialDependencyLayer(3, 4, state_size=6, directions=("right", "down"), carry=carry, composition="serial")
    swapped.load_state_dict(orig.state_dict())
    assert not torch.allclose(swapped(x), orig(x))


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
@pytest.mark.parametrize(
    "kwargs,hw,out_hw",
    [
        ({}, (9, 13), (9, 13)),
        ({"stride": 2}, (9, 13), (5, 7)),
        ({"stride": 2, "transposed": True, "output_padding": 1}, (5, 7), (10, 14)),
        ({"stride": 2, "transposed": True}, (5, 7), (9, 13)),
        ({"kernel_size": 1, "padding": 0}, (1, 6), (1, 6)),
        ({"kernel_size": (3, 5), "padding": (1, 2)}, (6, 4), (6, 4)),
    ],
)
def test_output_shapes(cls, kwargs, hw, out_hw):
    layer = cls(3, 5, state_size=4, **kwargs)
    y = layer(torch.randn(2, 3, *hw))
    assert y.shape == (2, 5, *out_hw)


def test_residual_sdn_formula():
    torch.manual_seed(0)
    m = ResidualSDN(3, 4, state_size=5)
    x = torch.randn(2, 3, 6, 5)
    s, g = m.sdn(x).chunk(2, dim=1)
    want = torch.sigmoid(g) * m.conv(x) + (1 - torch.sigmoid(g)) * s
    torch.testing.assert_close(m(x), want)
    assert m.sdn.out_channels == 8 and m.conv.out_channels == 4


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_state_dict_round_trip(cls, tmp_path):
    torch.manual_seed(0)
    a = cls(3, 4, state_size=5, directions=("left", "up", "right"), stride=2)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    b = cls(3, 4, state_size=5, directions=("left", "up", "right"), stride=2)
    x = torch.randn(1, 3, 8, 10)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(torch.load(tmp_path / "w.pt"))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_layer_gradcheck(cls):
    torch.manual_seed(0)
    layer = cls(2, 2, state_size=2, directions=("right", "down", "left", "up")).double()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_extra_repr_is_readable():
    r = repr(SpatialDependencyLayer(8, 16, state_size=32, directions=(0, 2), stride=2))
    assert "8, 16, state_size=32, directions=('right', 'down')" in r and "stride=(2, 2)" in r
    r = repr(ResidualSDN(8, 16, state_size=32, transposed=True, stride=2, output_padding=1))
    assert "transposed=True" in r and "output_padding=(1, 1)" in r


def test_drops_into_a_network():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), ResidualSDN(4, 4, state_size=4), nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, t = torch.randn(4, 1, 6, 7), torch.rand(4, 1, 6, 7)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (net(x) - t).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_backend_is_settable_and_validated():
    layer = SpatialDependencyLayer(2, 2, state_size=3, backend="reference")
    assert layer.backend == "reference" and all(s.backend == "reference" for s in layer.sweeps)
    with pytest.raises(ValueError, match="not a backend"):
        layer.backend = "nope"
    with pytest.raises(ValueError, match="not a backend"):
        ResidualSDN(2, 2, state_size=3, backend="nope")


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"state_size": 0}, ValueError, "state_size must be >= 1, got 0"),
        ({"state_size": 2.5}, TypeError, "state_size must be an int"),
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1"),
        ({"out_channels": -1}, ValueError, "out_channels must be >= 1"),
        ({"directions": ()}, ValueError, "at least one direction"),
        ({"directions": "right"}, TypeError, r"wrap a single direction in a tuple"),
        ({"directions": ("right", "north")}, ValueError, r"directions\[1\]='north' is not a direction"),
        ({"directions": (0, 7)}, ValueError, r"directions\[1\]=7 is not a published direction code"),
        ({"output_padding": 1}, ValueError, "needs transposed=True"),
        ({"transposed": "yes"}, TypeError, "transposed must be a bool"),
        # Geometry is checked at construction (it used to fail only at the first forward).
        ({"kernel_size": 0}, ValueError, "kernel_size must be >= 1 on every axis, got 0"),
        ({"stride": 0}, ValueError, "stride must be >= 1 on every axis, got 0"),
        ({"padding": -1}, ValueError, "padding must be >= 0 on every axis, got -1"),
        ({"kernel_size": (3, 3, 3)}, TypeError, r"kernel_size must be an int or a tuple of 2 ints"),
        ({"padding": "full"}, ValueError, "padding='full' is not valid"),
        ({"transposed": True, "stride": 2, "output_padding": 2}, ValueError, "smaller than stride"),
        # The order of the sweeps is the function: an unordered collection is refused.
        ({"directions": {"right", "down"}}, TypeError, "ordered sequence.*set"),
        ({"directions": frozenset({"right"})}, TypeError, "ordered sequence"),
        ({"directions": {"right": 0, "down": 1}}, TypeError, "ordered sequence"),
        ({"spatial_dims": 1}, ValueError, r"spatial_dims=1 is not supported; expected one of \(2, 3\)"),
        ({"directions": ("in",)}, ValueError, r"'in' is not a direction.*spatial_dims=3"),
    ],
)
@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_bad_arguments(cls, kwargs, exc, match):
    args = {"in_channels": 2, "out_channels": 3, "state_size": 4}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        cls(**args)


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.randn(3, 5, 5), ValueError, r"input must have shape \(B, C, H, W\)"),
        (torch.randn(1, 3, 5, 5), ValueError, "input has 3 channels, expected in_channels=2"),
        (torch.ones(1, 2, 5, 5, dtype=torch.long), TypeError, "floating-point"),
        (torch.randn(1, 2, 0, 5), ValueError, "zero-sized"),
        ("image", TypeError, "torch.Tensor"),
    ],
)
def test_bad_forward_inputs(cls, x, exc, match):
    with pytest.raises(exc, match=match):
        cls(2, 3, state_size=4)(x)


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_of_another_dtype_gets_the_documented_error(cls, dtype):
    layer = cls(2, 3, state_size=4)
    with pytest.raises(TypeError, match=f"input has dtype {dtype} but the module's parameters are torch.float32"):
        layer(torch.randn(1, 2, 5, 6, dtype=dtype))
    if dtype != torch.float64:  # autocast casts half inputs (float64 ones are outside its scope)
        # Under autocast the convolutions cast the input themselves: it still runs.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(torch.randn(1, 2, 5, 6, dtype=dtype)).shape == (1, 3, 5, 6)


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_a_volume_given_to_a_2d_layer_says_which_spatial_dims(cls):
    with pytest.raises(ValueError, match="needs a module built with spatial_dims=3"):
        cls(2, 3, state_size=4)(torch.randn(1, 2, 4, 5, 6))


def test_same_padding_passes_through_to_the_convolution():
    layer = SpatialDependencyLayer(2, 3, state_size=4, kernel_size=5, padding="same")
    assert layer.project_in.padding == "same" and layer(torch.randn(1, 2, 7, 9)).shape == (1, 3, 7, 9)


@pytest.mark.parametrize("backend", ["reference", "fused", "mixed"])
@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_output_keeps_the_callers_memory_format(cls, backend):
    """The 2D scan ops return channels-last states; a contiguous NCHW input gets an NCHW output,
    whatever the backend (``mixed``: sweeps on different backends)."""
    layer = cls(3, 4, state_size=5, backend="fused" if backend == "mixed" else backend)
    if backend == "mixed":
        next(m for m in layer.modules() if isinstance(m, SpatialDependencyLayer)).sweeps[0].backend = "reference"
    y = layer(torch.randn(2, 3, 6, 7))
    assert y.is_contiguous()
    y.view(2, -1)  # would fail on a channels-last result


# ---- forward: project in, sweep, project out, with the backend's fast paths -------------------


@pytest.fixture
def fast_path_calls(monkeypatch):
    """Counts the calls of the CPU fast kernels the layer's projections may take."""
    from spatialrec.ops import projection

    calls = {"tanh_": 0, "project_channels_last": 0}
    for name in calls:
        real = getattr(projection, name)

        def spy(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(projection, name, spy)
    return calls


@pytest.mark.parametrize(
    "backend, memory_format, fast_tanh, gemm_projection, contiguous_out",
    [
        # Channels-last inside; the 2D scan ops return channels-last states (what their fakes
        # declare, docs/kernels.md), which the GEMM projection writes back contiguous.
        ("fused", torch.contiguous_format, 1, 1, True),
        ("auto", torch.contiguous_format, 1, 1, True),  # "auto" is fused on the CPU
        ("fused", torch.channels_last, 1, 0, False),  # a channels-last caller keeps its format
        ("reference", torch.contiguous_format, 1, 1, True),
    ],
)
@pytest.mark.parametrize("carry, composition", [("prior", "serial"), ("line", "parallel"), ("line", "serial")])
def test_forward_is_project_in_sweep_project_out(fast_path_calls, backend, memory_format, fast_tanh, gemm_projection, contiguous_out, carry, composition):
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=5, directions=("right", "down"), backend=backend, carry=carry, composition=composition)
    x = torch.randn(2, 3, 6, 7).contiguous(memory_format=memory_format)
    y = layer(x)
    assert fast_path_calls == {"tanh_": fast_tanh, "project_channels_last": gemm_projection}
    assert y.is_contiguous() == contiguous_out
    # The maths, with plain torch ops and the reference scan.
    h0 = torch.tanh(layer.project_in(x))
    h = h0
    outs = []
    for sweep in layer.sweeps:
        src = h0 if composition == "parallel" else h
        h = directional_gru_scan(src, sweep.weight_ih, sweep.weight_hh, sweep.bias_ih, sweep.bias_hh, sweep.direction, backend="reference", carry=carry)
        outs.append(h)
    want = sum(outs) / len(outs) if composition == "parallel" else h
    torch.testing.assert_close(y, layer.project_out(want), rtol=1e-5, atol=1e-5)


def test_forward_with_sweeps_on_different_backends_takes_plain_ops(fast_path_calls):
    torch.manual_seed(1)
    layer = SpatialDependencyLayer(3, 4, state_size=5, directions=("right", "down"), backend="fused")
    x = torch.randn(1, 3, 5, 6)
    want = layer(x)
    layer.sweeps[1].backend = "reference"
    assert layer.backend == "fused"  # the first sweep's
    calls = dict(fast_path_calls)
    y = layer(x)
    assert fast_path_calls == calls  # no fast kernel: one sweep module after the other
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_forward_under_cpu_autocast_keeps_the_convolution(fast_path_calls):
    torch.manual_seed(2)
    layer = SpatialDependencyLayer(3, 4, state_size=5, backend="fused")
    x = torch.randn(1, 3, 5, 6)
    want = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    # The channels-last GEMM projection runs on the first, full-precision, call only: under
    # autocast the convolution runs (in autocast's dtype).
    assert fast_path_calls["project_channels_last"] == 1
    assert y.is_contiguous()
    torch.testing.assert_close(y.float(), want, rtol=5e-2, atol=5e-2)
