"""The SDN modules with ``spatial_dims=3`` (and the thin ``*3d`` aliases)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spatialrec
from spatialrec.layers import DirectionalGRU3d, ResidualSDN, ResidualSDN3d, SpatialDependencyLayer, SpatialDependencyLayer3d
from spatialrec.ops import directional_gru_scan3d


pytestmark = pytest.mark.usefixtures("one_thread")


def _seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def test_exports() -> None:
    assert spatialrec.SpatialDependencyLayer3d is SpatialDependencyLayer3d
    assert spatialrec.ResidualSDN3d is ResidualSDN3d
    assert spatialrec.DirectionalGRU3d is DirectionalGRU3d
    assert spatialrec.directional_gru_scan3d is directional_gru_scan3d


@pytest.mark.parametrize(
    "alias,spine", [(SpatialDependencyLayer3d, SpatialDependencyLayer), (ResidualSDN3d, ResidualSDN)]
)
def test_aliases_are_the_spine_with_spatial_dims_3(alias: type, spine: type) -> None:
    torch.manual_seed(0)
    a = alias(3, 4, state_size=5)
    torch.manual_seed(0)
    b = spine(3, 4, state_size=5, spatial_dims=3)
    assert isinstance(a, spine) and a.spatial_dims == 3 and a.directions == ("right", "down", "in")
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randn(1, 3, 3, 4, 5)
    torch.testing.assert_close(a(x), b(x))
    # the 3D default state size, and the 2D defaults of the spine
    assert alias(3, 4).state_size == 32 and spine(3, 4).state_size == 150 and spine(3, 4).directions == ("right", "down")


def test_directional_gru3d_parameters_and_forward() -> None:
    _seeded()
    sweep = DirectionalGRU3d(4, 5)  # code 5 = "out"
    assert sweep.direction == "out"
    shapes = {k: tuple(v.shape) for k, v in sweep.state_dict().items()}
    assert shapes == {"weight_ih": (12, 36), "weight_hh": (12, 4), "bias_ih": (12,), "bias_hh": (12,)}
    bound = 1 / 2
    assert all(p.abs().max() <= bound for p in sweep.parameters())
    x = torch.randn(2, 4, 3, 4, 5)
    for carry in ("line", "prior"):  # the library's cell, then the published one
        sweep.carry = carry
        expected = directional_gru_scan3d(
            x, sweep.weight_ih, sweep.weight_hh, sweep.bias_ih, sweep.bias_hh, "out", backend="reference", carry=carry
        )
        torch.testing.assert_close(sweep(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("carry, composition", [("prior", "serial"), ("line", "parallel")])
def test_layer_is_project_in_sweeps_project_out(carry: str, composition: str) -> None:
    """The layer computes project_out(sweep_k(...sweep_1(tanh(project_in(x))))) (serial) or
    project_out(mean_k sweep_k(tanh(project_in(x)))) (parallel) with the reference op."""
    _seeded(1)
    layer = SpatialDependencyLayer3d(3, 5, state_size=4, directions=("left", 4, "up"), carry=carry, composition=composition)
    x = torch.randn(2, 3, 5, 4, 6)
    h0 = torch.tanh(nn.functional.conv3d(x, layer.project_in.weight, layer.project_in.bias, padding=1))
    h, outs = h0, []
    for sweep, d in zip(layer.sweeps, ("left", "in", "up")):
        src = h0 if composition == "parallel" else h
        h = directional_gru_scan3d(src, sweep.weight_ih, sweep.weight_hh, sweep.bias_ih, sweep.bias_hh, d, "reference", carry)
        outs.append(h)
    if composition == "parallel":
        h = sum(outs) / len(outs)
    expected = nn.functional.conv3d(h, layer.project_out.weight, layer.project_out.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.directions == ("left", "in", "up")


def test_default_directions_give_every_voxel_its_upstream_octant() -> None:
    _seeded(2)
    layer = SpatialDependencyLayer3d(1, 1, state_size=3)
    assert layer.directions == ("right", "down", "in")
    x = torch.randn(1, 1, 4, 5, 6, requires_grad=True)
    y = layer(x)
    (grad_last,) = torch.autograd.grad(y[0, 0, -1, -1, -1], x, retain_graph=True)
    assert torch.count_nonzero(grad_last) == x.numel()  # the last voxel sees the whole volume
    (grad_first,) = torch.autograd.grad(y[0, 0, 0, 0, 0], x)
    support = grad_first[0, 0] != 0
    assert support[:2, :2, :2].all() and not support[2:].any() and not support[:, 2:].any() and not support[..., 2:].any()


@pytest.mark.parametrize("shape", [(5, 7, 6), (3, 1, 4), (1, 2, 9)])
def test_fused_and_reference_layers_agree_on_odd_sizes(shape: tuple[int, int, int]) -> None:
    _seeded(3)
    layer = ResidualSDN3d(2, 3, state_size=4, directions=("right", "down", "in", "out"))
    x = torch.randn(2, 2, *shape)
    results = []
    for backend in ("reference", "fused"):
        layer.backend = backend
        assert all(s.backend == backend for s in layer.sdn.sweeps)
        layer.zero_grad()
        y = layer(x)
        y.square().sum().backward()
        # A sweep over a length-1 axis never uses its weights: autograd gives None, fused zeros.
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in layer.parameters()]
        results.append((y.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    for gf, gr in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-4)


def test_residual_formula() -> None:
    _seeded(4)
    block = ResidualSDN3d(3, 2, state_size=4)
    x = torch.randn(1, 3, 4, 3, 5)
    s, g = block.sdn(x).chunk(2, dim=1)
    c = nn.functional.conv3d(x, block.conv.weight, block.conv.bias, padding=1)
    torch.testing.assert_close(block(x), torch.sigmoid(g) * c + (1 - torch.sigmoid(g)) * s)
    assert block.sdn.out_channels == 4 and block.state_size == 4 and block.directions == ("right", "down", "in")


@pytest.mark.parametrize("cls", [SpatialDependencyLayer3d, ResidualSDN3d])
def test_strided_and_transposed_geometry(cls: type) -> None:
    _seeded(5)
    down = cls(2, 4, state_size=3, stride=2)
    assert down(torch.randn(1, 2, 5, 7, 9)).shape == (1, 4, 3, 4, 5)
    up = cls(4, 2, state_size=3, kernel_size=3, stride=2, padding=1, transposed=True, output_padding=1)
    assert up(torch.randn(1, 4, 3, 4, 5)).shape == (1, 2, 6, 8, 10)
    assert isinstance(up.sdn.project_in if cls is ResidualSDN3d else up.project_in, nn.ConvTranspose3d)


def test_gradcheck_layer_float64() -> None:
    _seeded(6)
    layer = SpatialDependencyLayer3d(1, 1, state_size=2, directions=("up", "in"), backend="fused").double()
    x = torch.randn(1, 1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_bad_arguments_and_inputs() -> None:
    layer = SpatialDependencyLayer3d(2, 3, state_size=4)
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        layer(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="expected in_channels=2"):
        layer(torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(1, 2, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="state_size must be >= 1"):
        SpatialDependencyLayer3d(2, 3, state_size=0)
    with pytest.raises(TypeError, match="out_channels must be an int"):
        ResidualSDN3d(2, 3.0)
    with pytest.raises(ValueError, match="not a 3D direction"):
        SpatialDependencyLayer3d(2, 3, directions=("right", "forward"))
    with pytest.raises(TypeError, match="sequence of directions"):
        SpatialDependencyLayer3d(2, 3, directions="in")
    with pytest.raises(ValueError, match="needs transposed=True"):
        SpatialDependencyLayer3d(2, 3, output_padding=1)
    with pytest.raises(ValueError, match="not a backend"):
        DirectionalGRU3d(4, "in", backend="cuda")
    with pytest.raises(ValueError, match="not a backend"):
        layer.backend = "bogus"
    with pytest.raises(TypeError, match="transposed must be a bool"):
        SpatialDependencyLayer3d(2, 3, transposed=1)
