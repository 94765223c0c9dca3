"""The cell's carry option (``carry="line"``: the update keeps the previous line's state) in every
CPU backend, against the independent naive oracles, and the layer's cells: the new default passes
a far input's gradient at initialisation, the published cell stays exact and reachable."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spatialrec import ResidualSDN, SpatialDependencyLayer, create_model
from spatialrec.blocks import set_sdn_cell
from spatialrec.compat import convert_published_state_dict
from spatialrec.layers import DEFAULT_CELL, PUBLISHED_CELL
from spatialrec.ops import directional_gru_scan, directional_gru_scan_sequence, valid_directions
from spatialrec.ops.gates import check_carry

from .naive import naive_scan, random_params
from .test_scan3d import _params as params3d
from .test_scan3d import naive_scan3d

BACKENDS = ("reference", "fused")


def _inputs2d(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype), list(random_params(shape[1], g, dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", valid_directions(2))
def test_line_carry_matches_the_naive_oracle_2d(backend, direction):
    x, params = _inputs2d((2, 3, 4, 5), seed=11)
    got = directional_gru_scan(x, *params, direction, backend=backend, carry="line")
    torch.testing.assert_close(got, naive_scan(x, *params, direction, carry="line"), rtol=1e-12, atol=1e-12)
    # and it is a different function from the published cell
    assert not torch.allclose(got, naive_scan(x, *params, direction))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["in", "up", "left"])
def test_line_carry_matches_the_naive_oracle_3d(backend, direction):
    x = torch.randn(1, 2, 3, 4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    p = params3d(2, seed=2)
    got = directional_gru_scan(x, *p, direction, backend=backend, carry="line")
    np.testing.assert_allclose(got.numpy(), naive_scan3d(x, *p, direction, carry="line"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_line_carry_gradcheck_float64(backend, spatial_dims):
    if spatial_dims == 2:
        x, params = _inputs2d((1, 2, 3, 4), seed=3)
        direction = "up"
    else:
        x, params = torch.randn(1, 2, 3, 2, 3, dtype=torch.float64), params3d(2, seed=4)
        direction = "out"
    leaves = [t.clone().requires_grad_(True) for t in (x, *params)]
    fn = lambda *t: directional_gru_scan(t[0], *t[1:], direction, backend=backend, carry="line")  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_fused_sequence_with_line_carry_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    params = [tuple(t.requires_grad_(True) for t in random_params(4, g)) for _ in range(3)]
    dirs = ("right", "up", "left")
    leaves = [x, *(t for p in params for t in p)]
    out = {}
    for backend in BACKENDS:
        y = directional_gru_scan_sequence(x, params, dirs, backend=backend, carry="line")
        out[backend] = (y, torch.autograd.grad(y.square().sum(), leaves))
    torch.testing.assert_close(out["fused"][0], out["reference"][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(out["fused"][1], out["reference"][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_carry_is_checked():
    x, params = _inputs2d((1, 2, 3, 3), seed=0)
    with pytest.raises(ValueError, match="carry='state' is not a cell"):
        directional_gru_scan(x, *params, "down", carry="state")
    with pytest.raises(TypeError, match="carry must be a string"):
        check_carry(1)
    with pytest.raises(ValueError, match="composition"):
        SpatialDependencyLayer(2, 2, state_size=2, composition="stacked")


def _far_gradient(layer: torch.nn.Module, size: int = 16) -> dict[str, float]:
    """Per border: |d y[centre of the opposite border] / d x[border line]| over |d y / d x| at that pixel."""
    x = torch.randn(1, layer.in_channels, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    mid, last = size // 2, size - 1
    out = {}
    for src, (i, j) in {"top": (last, mid), "bottom": (0, mid), "left": (mid, last), "right": (mid, 0)}.items():
        (g,) = torch.autograd.grad(layer(x)[0, :, i, j].sum(), x)
        line = {"top": g[0, :, 0], "bottom": g[0, :, last], "left": g[0, :, :, 0], "right": g[0, :, :, last]}[src]
        out[src] = float(line.norm() / g[0, :, i, j].norm())
    return out


def test_four_direction_default_layer_passes_a_far_gradient_at_initialisation():
    """What the ablation found (docs/holistic.md): the published cell's far-input gradient vanishes
    geometrically along a sweep; the default cell keeps it within an order of magnitude of the
    local one, from every side."""
    four = ("right", "down", "left", "up")
    torch.manual_seed(0)
    new = SpatialDependencyLayer(8, 8, state_size=16, directions=four)
    torch.manual_seed(0)
    published = SpatialDependencyLayer(8, 8, state_size=16, directions=four, **PUBLISHED_CELL)
    assert (new.carry, new.composition) == (DEFAULT_CELL["carry"], DEFAULT_CELL["composition"])
    far_new, far_pub = _far_gradient(new), _far_gradient(published)
    assert min(far_new.values()) > 0.05, far_new
    assert max(far_pub.values()) < 0.01, far_pub


def test_published_cell_is_reachable_and_exact():
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=5, directions=("right", "down"), **PUBLISHED_CELL)
    x = torch.randn(2, 3, 6, 7)
    h = torch.tanh(layer.project_in(x))
    params = [(s.weight_ih, s.weight_hh, s.bias_ih, s.bias_hh) for s in layer.sweeps]
    want = layer.project_out(directional_gru_scan_sequence(h, params, layer.directions, carry="prior"))
    # (not bitwise: the layer's CPU fast paths, tanh as 2 sigmoid(2v) - 1 and the GEMM projection)
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-6)
    model = type(create_model("sdn_unet")).from_published_args(
        n_channels=1, n_classes=1, n_layers=2, feat_start=4, block="vgg", sdn_b_enc=True, sdn_n_layers=1
    )
    cells = {(m.carry, m.composition) for m in model.modules() if isinstance(m, SpatialDependencyLayer)}
    assert cells == {("prior", "serial")}


def test_set_sdn_cell_switches_every_layer():
    model = create_model("sdn_unet", in_channels=1, num_classes=1, depth=2, base_width=4, state_size=4)
    assert set_sdn_cell(model, **PUBLISHED_CELL) > 0
    assert all(m.carry == "prior" and m.composition == "serial" for m in model.modules() if isinstance(m, SpatialDependencyLayer))


@pytest.mark.parametrize("cls", [SpatialDependencyLayer, ResidualSDN])
def test_a_version_1_state_dict_brings_the_published_cell(cls):
    """A state_dict saved before the cell options (module version 1) was trained with the published
    cell: loading it into a default layer switches the layer to that cell, with a warning."""
    torch.manual_seed(0)
    old = cls(3, 4, state_size=4, **PUBLISHED_CELL)
    sd = old.state_dict()
    for meta in sd._metadata.values():
        meta["version"] = 1
    new = cls(3, 4, state_size=4)
    with pytest.warns(UserWarning, match="saved by spatialrec < 0.2"):
        new.load_state_dict(sd)
    assert (new.carry, new.composition) == ("prior", "serial")
    x = torch.randn(1, 3, 5, 6)
    assert torch.equal(new(x), old(x))
    # A current state_dict (version 2) leaves the cell as built, silently.
    fresh = cls(3, 4, state_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(cls(3, 4, state_size=4).state_dict())
    assert fresh.carry == "line"


def test_converted_published_weights_bring_the_published_cell():
    torch.manual_seed(0)
    ref = SpatialDependencyLayer(3, 4, state_size=4, directions=(0, 2), **PUBLISHED_CELL)
    published = {k.replace("project_in", "pre_cnn").replace("project_out", "post_cnn"): v for k, v in ref.state_dict().items()}
    published = {
        (k.replace("sweeps.", "sdn_update_network.").replace(".weight_", ".cell.weight_").replace(".bias_", ".cell.bias_")
         if k.startswith("sweeps.") else k): v
        for k, v in published.items()
    }  # fmt: skip
    layer = SpatialDependencyLayer(3, 4, state_size=4, directions=(0, 2))
    with pytest.warns(UserWarning, match="published cell"):
        layer.load_state_dict(convert_published_state_dict(published))
    x = torch.randn(1, 3, 5, 6)
    assert torch.equal(layer(x), ref(x))
