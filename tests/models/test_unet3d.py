"""The U-Net, its blocks and the registry entries with ``spatial_dims=3`` (SDN-UNet-3D)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialrec.blocks import ResidualSDNBlock, SDNBlock, VGGBlock, make_block, set_sdn_backend
from spatialrec.layers import ResidualSDN, SpatialDependencyLayer
from spatialrec.models import UNet, UNet3d
from spatialrec.models.unet import default_sdn_levels3d
from spatialrec.models.common import crop_window, pad_to_multiple

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw) -> UNet:
    args = dict(depth=2, base_width=4, state_size=3, spatial_dims=3)
    args.update(kw)
    return UNet(1, 2, **args)


def test_unet3d_alias_is_the_3d_unet_with_the_volumetric_defaults() -> None:
    alias, spine = UNet3d(1, 1, encoder_sdn=(3,)), UNet(1, 1, depth=3, base_width=16, encoder_sdn=(3,), spatial_dims=3)
    assert isinstance(alias, UNet) and alias.spatial_dims == 3 and alias.norm == "instance"
    assert alias.state_size == 32 and alias.directions == ("right", "down", "in")
    assert list(alias.state_dict()) == list(spine.state_dict())


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 7, 4), (4, 13, 6)])
@pytest.mark.parametrize("upsample", ["interpolate", "transposed"])
def test_odd_volume_sizes(shape: tuple[int, int, int], upsample: str) -> None:
    torch.manual_seed(0)
    model = _tiny(encoder_sdn=(1, 2), decoder_sdn=(0,), sdn_block="residual_sdn", upsample=upsample)
    x = torch.randn(2, 1, *shape, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 2, *shape)
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_sdn_placement_and_counts() -> None:
    model = _tiny(encoder_sdn=(2,), decoder_sdn="all")
    assert model.sdn_levels() == {"encoder": (2,), "decoder": (0, 1)}
    assert model.num_sdn_layers() == 3
    assert isinstance(model.encoder[2], SDNBlock) and isinstance(model.encoder[1], VGGBlock)
    assert isinstance(model.encoder[2].sdn, SpatialDependencyLayer) and model.encoder[2].sdn.spatial_dims == 3
    res = _tiny(encoder_sdn="all", sdn_block="residual_sdn")
    assert all(isinstance(b, ResidualSDNBlock) and b.spatial_dims == 3 for b in res.encoder)
    assert isinstance(res.encoder[0].sdn, ResidualSDN) and res.encoder[0].sdn.spatial_dims == 3
    assert _tiny().num_sdn_layers() == 0
    assert default_sdn_levels3d(3) == (2, 3) and default_sdn_levels3d(1) == (1,)
    assert model.widths == (4, 8, 16)


def test_norm_choice() -> None:
    inst = _tiny(norm="instance")
    batch = _tiny(norm="batch")
    assert any(isinstance(m, nn.InstanceNorm3d) for m in inst.modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in inst.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in batch.modules())


def test_backends_agree_in_the_model() -> None:
    torch.manual_seed(1)
    model = _tiny(encoder_sdn=(1, 2), decoder_sdn=(1,)).eval()
    x = torch.randn(1, 1, 5, 6, 7)
    assert set_sdn_backend(model, "reference") == 3
    with torch.no_grad():
        ref = model(x)
    set_sdn_backend(model, "fused")
    with torch.no_grad():
        fused = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


def test_padding_round_trip() -> None:
    x = torch.randn(1, 2, 5, 6, 7)
    for mode in ("reflect", "replicate", "constant"):
        padded, window = pad_to_multiple(x, 4, mode)
        assert padded.shape == (1, 2, 8, 8, 8)
        torch.testing.assert_close(crop_window(padded, window), x)


def test_translation_equivariance_of_plain_convs_is_not_required_but_padding_is_centred() -> None:
    # the odd voxel of padding goes to the far side: a 5-long axis padded to 8 starts at 1
    _, window = pad_to_multiple(torch.zeros(1, 1, 5, 8, 6), 8, "constant")
    assert window == ((1, 5), (0, 8), (1, 6))


def test_make_block_kinds_3d() -> None:
    x = torch.randn(1, 3, 3, 4, 5)
    for kind in ("vgg", "sdn", "residual_sdn"):
        assert make_block(kind, 3, 6, state_size=2, spatial_dims=3)(x).shape == (1, 6, 3, 4, 5)
    with pytest.raises(ValueError, match="block kind 'res' is unknown"):
        make_block("res", 3, 6, spatial_dims=3)
    with pytest.raises(ValueError, match="norm"):
        make_block("vgg", 3, 6, spatial_dims=3, norm="group")
    with pytest.raises(ValueError, match="spatial_dims=4"):
        make_block("vgg", 3, 6, spatial_dims=4)


def test_bad_arguments_and_inputs() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        model(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(1, 1, 8, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="encoder_sdn contains level 3"):
        _tiny(encoder_sdn=(3,))
    with pytest.raises(ValueError, match="decoder_sdn contains level 2"):
        _tiny(decoder_sdn=(2,))
    with pytest.raises(TypeError, match="encoder_sdn must be"):
        _tiny(encoder_sdn=2)
    with pytest.raises(ValueError, match="sdn_block"):
        _tiny(sdn_block="vgg")
    with pytest.raises(ValueError, match="not a 3D direction"):
        _tiny(directions=("right", "forward"))
    with pytest.raises(TypeError, match="directions must be a sequence"):
        _tiny(directions="in")
    with pytest.raises(ValueError, match="not a backend"):
        _tiny(backend="gpu")
    with pytest.raises(ValueError, match="pad_mode"):
        _tiny(pad_mode="wrap")
    with pytest.raises(TypeError, match="depth must be an int"):
        _tiny(depth=2.0)
    with pytest.raises(ValueError, match="upsample='trilinear'"):
        _tiny(upsample="trilinear")
    with pytest.raises(ValueError, match="spatial_dims=1"):
        _tiny(spatial_dims=1)


def test_registry_entries_and_defaults() -> None:
    import spatialrec

    assert {"unet3d", "sdn_unet3d"} <= set(spatialrec.list_models("*3d"))
    plain = spatialrec.create_model("unet3d", in_channels=1)
    assert isinstance(plain, UNet) and plain.spatial_dims == 3 and plain.in_channels == 1 and plain.num_classes == 1
    assert plain.widths == (16, 32, 64, 128) and plain.num_sdn_layers() == 0 and plain.norm == "instance"
    sdn = spatialrec.create_model("sdn_unet3d", num_classes=4)
    assert sdn.sdn_levels() == {"encoder": (2, 3), "decoder": ()} and sdn.num_classes == 4
    layers = [m for m in sdn.modules() if isinstance(m, SpatialDependencyLayer)]
    assert len(layers) == 2 and all(l.state_size == 32 and l.directions == ("right", "down", "in") for l in layers)
    assert spatialrec.create_model("sdn_unet3d", depth=2).sdn_levels()["encoder"] == (1, 2)
    assert spatialrec.create_model("sdn_unet3d", encoder_sdn=(3,)).sdn_levels()["encoder"] == (3,)
    with pytest.raises(TypeError, match="bilinear"):
        spatialrec.create_model("unet3d", bilinear=True)


@pytest.mark.parametrize("name", ["unet3d", "sdn_unet3d"])
def test_registered_3d_models_train_on_odd_volumes(name: str) -> None:
    import spatialrec

    torch.manual_seed(0)
    model = spatialrec.create_model(name, in_channels=2, num_classes=1, depth=2, base_width=4, state_size=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 7, 9, 5, generator=g)
    target = (torch.rand(2, 1, 7, 9, 5, generator=g) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_backend_helpers_see_3d_layers() -> None:
    from spatialrec.blocks import count_sdn_layers

    model = _tiny(encoder_sdn=(1, 2), sdn_block="residual_sdn")
    assert count_sdn_layers(model) == 2 == model.num_sdn_layers()
    assert set_sdn_backend(model, "reference") == 2
    assert all(m.backend == "reference" for m in model.modules() if isinstance(m, SpatialDependencyLayer))
