"""Registry: names, errors, overrides, documented defaults; every registered model trains on a toy batch."""

import io

import pytest
import torch
import torch.nn.functional as F

import spatialrec
from spatialrec.blocks import ResidualSDNBlock, SDNBlock, set_sdn_backend
from spatialrec.models import TransUNet, UNet, UNetPlusPlus, create_model, list_models, register_model
from spatialrec.models.registry import unregister_model

REQUIRED = ["pool_unet", "sdn_transunet", "sdn_unet", "sdn_unet_pp", "transunet", "unet", "unet_pp"]
# captured at import, before any test registers its own; the 2D models (the 3D ones, "*3d", are
# tested on volumes in tests/models/test_unet3d.py)
BUILTIN = [n for n in list_models() if not n.endswith("3d")]


def tiny_overrides(name: str) -> dict:
    kw: dict = dict(base_width=4, depth=2)
    if "sdn" in name:
        kw.update(state_size=4)
    if "trans" in name:
        kw.update(transformer_dim=8, transformer_heads=2, transformer_layers=1, img_size=(20, 28), dropout=0.0)
    return kw


def test_required_names_registered_and_reexported():
    assert set(REQUIRED) <= set(BUILTIN)
    assert BUILTIN == sorted(BUILTIN)
    assert spatialrec.create_model is create_model and spatialrec.list_models is list_models
    assert spatialrec.UNet is UNet and spatialrec.UNetPlusPlus is UNetPlusPlus and spatialrec.TransUNet is TransUNet
    assert list_models("sdn_*") == ["sdn_transunet", "sdn_unet", "sdn_unet3d", "sdn_unet_pp"]


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'sdn_unet3'.*sdn_unet, sdn_unet3d, sdn_unet_pp.*unet_pp"):
        create_model("sdn_unet3")


def test_bad_override_names_the_argument():
    with pytest.raises(TypeError, match="n_layers"):
        create_model("unet", n_layers=4)
    with pytest.raises(TypeError, match="depth must be an int"):
        create_model("sdn_unet", depth="4")


def test_documented_defaults():
    m = create_model("sdn_unet")
    assert isinstance(m, UNet) and m.in_channels == 3 and m.num_classes == 1
    assert m.widths == (32, 64, 128, 256, 512) and m.upsample == "interpolate"
    assert m.sdn_levels() == {"encoder": (1, 2, 3, 4), "decoder": ()}
    sdn_blocks = [b for b in m.modules() if isinstance(b, SDNBlock)]
    assert len(sdn_blocks) == 4 and all(b.sdn.state_size == 150 for b in sdn_blocks)
    assert all(b.sdn.directions == ("right", "down") for b in sdn_blocks)

    pp = create_model("sdn_unet_pp", in_channels=1, num_classes=2)
    assert isinstance(pp, UNetPlusPlus) and pp.sdn_nodes() == {"encoder": (0, 1, 2, 3), "decoder": ()}
    assert sum(isinstance(b, ResidualSDNBlock) for b in pp.modules()) == 4

    t = create_model("sdn_transunet")
    assert isinstance(t, TransUNet) and t.sdn_levels() == {"encoder": (), "decoder": (1, 2, 3)}
    assert t.grid_size == (8, 8) and len(t.bottleneck.layers) == 4
    assert create_model("unet").num_sdn_layers() == 0 and create_model("unet_pp").num_sdn_layers() == 0
    assert create_model("transunet").num_sdn_layers() == 0


def test_overrides_are_forwarded():
    m = create_model("sdn_unet", in_channels=1, num_classes=4, base_width=8, depth=3, state_size=16,
                     directions=("down", "left"), backend="reference", upsample="transposed")  # fmt: skip
    assert m.in_channels == 1 and m.num_classes == 4 and m.widths == (8, 16, 32, 64)
    assert m.sdn_levels()["encoder"] == (1, 2, 3) and m.upsample == "transposed"
    sdn = m.encoder[1].sdn
    assert sdn.state_size == 16 and sdn.directions == ("down", "left") and sdn.backend == "reference"
    assert set_sdn_backend(m, "auto") == 3 and sdn.backend == "auto"
    assert create_model("sdn_unet", depth=2, encoder_sdn=(0,)).sdn_levels()["encoder"] == (0,)
    assert create_model("sdn_transunet", depth=3, base_width=4).sdn_levels()["decoder"] == (1, 2)


def test_register_model_decorator():
    @register_model(name="test_tiny_net")
    def _tiny(in_channels: int, num_classes: int, **overrides):
        return UNet(in_channels, num_classes, depth=1, base_width=2, **overrides)

    try:
        assert "test_tiny_net" in list_models()
        m = create_model("test_tiny_net", in_channels=2, num_classes=3)
        assert m(torch.randn(1, 2, 5, 6)).shape == (1, 3, 5, 6)
        with pytest.raises(ValueError, match="already registered"):
            register_model(name="test_tiny_net")(_tiny)
        register_model(name="test_tiny_net", overwrite=True)(_tiny)
    finally:
        unregister_model("test_tiny_net")
    assert "test_tiny_net" not in list_models()
    with pytest.raises(KeyError, match="test_tiny_net"):
        unregister_model("test_tiny_net")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_model_shapes(name):
    model = create_model(name, in_channels=2, num_classes=3, **tiny_overrides(name))
    for size in [(24, 24), (13, 17)]:
        assert model(torch.randn(2, 2, *size)).shape == (2, 3, *size)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_model_trains_and_round_trips(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=1, **tiny_overrides(name))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 28, generator=g)
    target = (torch.rand(2, 1, 20, 28, generator=g) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(6):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        if step == 0:
            for pname, p in model.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], f"{name}: loss did not go down: {losses}"

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = create_model(name, in_channels=3, num_classes=1, **tiny_overrides(name))
    clone.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(model.eval()(x), clone.eval()(x))


@pytest.mark.parametrize("name", [n for n in BUILTIN if n.startswith("sdn_")])
def test_sdn_models_agree_across_scan_backends(name):
    # The whole model, not just the scan: switching the backend must not change outputs or gradients.
    torch.manual_seed(0)
    model = create_model(name, in_channels=2, num_classes=1, **tiny_overrides(name)).double().eval()
    x = torch.randn(2, 2, 13, 18, dtype=torch.float64)
    results = []
    for backend in ("reference", "fused"):
        assert set_sdn_backend(model, backend) == model.num_sdn_layers() > 0
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    (y_ref, g_ref), (y_fused, g_fused) = results
    torch.testing.assert_close(y_fused, y_ref)
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b)


def test_create_model_lets_each_entry_keep_its_own_defaults():
    # create_model used to pass its own in_channels=3 over the 1-channel default of the 3D entries.
    assert create_model("unet3d").in_channels == 1 and create_model("sdn_unet3d").in_channels == 1
    assert create_model("unet", base_width=4).in_channels == 3
    assert create_model("unet3d", in_channels=2, num_classes=3, base_width=4).num_classes == 3


def test_registry_says_which_models_take_volumes():
    from spatialrec.models import model_spatial_dims

    assert list_models(spatial_dims=3) == ["sdn_unet3d", "unet3d"]
    assert set(list_models(spatial_dims=2)) == set(REQUIRED)
    for name in list_models(spatial_dims=2) + list_models(spatial_dims=3):
        dims = model_spatial_dims(name)
        model = create_model(name, num_classes=2, **tiny_overrides(name))
        assert model.spatial_dims == dims
        x = torch.randn(1, model.in_channels, *([20, 28, 12][:dims]))
        assert model(x).shape == (1, 2, *x.shape[2:])
    assert "(B, in_channels, D, H, W)" in create_model.__doc__


@pytest.mark.parametrize("bad,exc,match", [(123, TypeError, "pattern must be a string"), ("*", None, None)])
def test_list_models_checks_its_pattern(bad, exc, match):
    if exc is None:
        assert list_models(bad) == list_models()
        return
    with pytest.raises(exc, match=match):
        list_models(bad)
    with pytest.raises(ValueError, match="spatial_dims=4"):
        list_models(spatial_dims=4)
