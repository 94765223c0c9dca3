"""spatialrec.convert on networks we did not write: MONAI BasicUNet / UNet and
segmentation_models_pytorch Unet (random encoder weights: nothing can be downloaded)."""

from __future__ import annotations

import io
import types
from typing import Callable

import pytest
import torch
from torch import nn

from spatialrec import ResidualSDN
from spatialrec.convert import add_spatial_recurrence, freeze_except_sdn, sdn_modules

from ._smp import import_smp

# One direction keeps the scan (sequential over lines) cheap; the home-made-network
# tests in tests/test_convert.py cross two directions. The 3D tests use the default directions
# (one sweep per axis: right, down, in) on tiny volumes.
OPTS = {"state_size": 4, "directions": ("down",)}
OPTS_3D = {"state_size": 4}


def _monai_nets() -> types.ModuleType:
    return pytest.importorskip("monai.networks.nets", reason="MONAI is installed by the 'dev' extra")


@pytest.fixture(scope="module")
def smp() -> types.ModuleType:
    return import_smp()


def _basic_unet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _monai_nets().BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))


def _basic_unet3d(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _monai_nets().BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))


def _monai_unet(seed: int) -> nn.Module:
    # Strided convolutions down, transposed convolutions (output_padding=1) up, residual units.
    torch.manual_seed(seed)
    return _monai_nets().UNet(
        spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1
    )


def _smp_unet(smp: types.ModuleType, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 4), in_channels=1, classes=2
    )


def _x(size: int = 16, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


def _x3d() -> torch.Tensor:
    # BasicUNet halves four times and its instance norm needs > 1 voxel at the bottom: 16x16x32.
    return torch.randn(1, 1, 16, 16, 32, generator=torch.Generator().manual_seed(0))


def _check_exact(
    make: Callable[[int], nn.Module], select: object, x: torch.Tensor, opts: dict[str, object] = OPTS
) -> nn.Module:
    net = make(0).eval()
    with torch.no_grad():
        before = net(x)
    names = add_spatial_recurrence(net, select, **opts)
    assert names and list(sdn_modules(net)) == names
    with torch.no_grad():
        after = net(x)
    assert after.shape == before.shape
    diff = (after - before).abs().max().item()
    assert diff <= 1e-5, f"max abs difference {diff} at initialisation"
    return net


def _check_gradients(net: nn.Module, x: torch.Tensor) -> None:
    net.train()
    net.zero_grad()
    net(x).square().mean().backward()
    for name, layer in sdn_modules(net).items():
        for pname, p in layer.named_parameters():
            if pname.startswith(("conv.", "sdn.project_out.")):
                assert p.grad is not None and torch.count_nonzero(p.grad) > 0, f"{name}.{pname}: no gradient"


def _check_round_trip(
    make: Callable[[int], nn.Module], select: object, net: nn.Module, x: torch.Tensor, opts: dict[str, object] = OPTS
) -> None:
    with torch.no_grad():
        for layer in sdn_modules(net).values():
            # Leave the exact starting point, so the round trip has to carry the SDN weights.
            layer.sdn.project_out.weight.normal_(0.0, 0.1)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = make(1)
    add_spatial_recurrence(other, select, **opts)
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    net.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(net(x), other(x))


def _check_twice(net: nn.Module, select: object, opts: dict[str, object] = OPTS) -> None:
    structure = repr(net)
    with pytest.raises(ValueError, match="matches no convolution"):
        add_spatial_recurrence(net, select, **opts)
    assert repr(net) == structure
    for name, layer in sdn_modules(net).items():
        assert not any(isinstance(m, ResidualSDN) for m in layer.sdn.modules()), name


def test_monai_basic_unet_everything() -> None:
    # BasicUNet halves four times and its instance norm needs > 1 pixel at the bottom: 32x32.
    x = _x(32, batch=1)
    net = _check_exact(_basic_unet, "*", x)
    # Every Conv2d and the ConvTranspose2d up-samplers.
    assert len(sdn_modules(net)) == 23
    assert isinstance(net.get_submodule("upcat_4.upsample.deconv"), ResidualSDN)
    _check_gradients(net, x)
    _check_twice(net, "*")


def test_monai_unet_strided_and_transposed() -> None:
    x = _x()
    select = "*"
    net = _check_exact(_monai_unet, select, x)
    up = net.get_submodule("model.1.submodule.2.0.conv")
    assert isinstance(up, ResidualSDN) and up.sdn.transposed
    assert up.conv.output_padding == (1, 1) and up.conv.stride == (2, 2)
    _check_gradients(net, x)
    _check_twice(net, select)
    _check_round_trip(_monai_unet, select, net, x)


def test_monai_fine_tuning_phase_one_moves_only_the_new_layers() -> None:
    x = _x()
    net = _monai_unet(0)
    chosen = ["model.1.submodule.0.conv.unit0.conv", "model.2.0.conv"]
    add_spatial_recurrence(net, chosen, **OPTS)
    trainable = freeze_except_sdn(net)
    assert trainable and all(n.startswith(tuple(f"{c}." for c in chosen)) for n in trainable)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if n not in trainable}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    opt.zero_grad()
    net(x).square().mean().backward()
    opt.step()
    for n, p in net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert torch.count_nonzero(net.get_submodule(chosen[0]).sdn.project_out.weight) > 0


def test_smp_unet_resnet_encoder_and_decoder(smp: types.ModuleType) -> None:
    x = _x(32, batch=1)
    make = lambda seed: _smp_unet(smp, seed)  # noqa: E731

    # With encoder_depth=3 the encoder keeps layer3/layer4 but never runs them: leave them out.
    def select(name: str, module: nn.Module) -> bool:
        return not name.startswith(("encoder.layer3.", "encoder.layer4."))

    net = _check_exact(make, select, x)
    assert isinstance(net.encoder.conv1, ResidualSDN) and net.encoder.conv1.conv.stride == (2, 2)
    assert isinstance(net.segmentation_head[0], ResidualSDN)
    _check_gradients(net, x)
    _check_twice(net, select)
    _check_round_trip(make, select, net, x)


def test_smp_unet_decoder_only(smp: types.ModuleType) -> None:
    x = _x(32, batch=1)
    net = _check_exact(lambda seed: _smp_unet(smp, seed), "decoder.*", x)
    assert all(name.startswith("decoder.") for name in sdn_modules(net))
    assert not isinstance(net.encoder.conv1, ResidualSDN)


def test_monai_basic_unet_3d_everything() -> None:
    x = _x3d()
    net = _check_exact(_basic_unet3d, "*", x, OPTS_3D)
    # Every Conv3d and the ConvTranspose3d up-samplers, each by a 3D layer sweeping every axis.
    layers = sdn_modules(net)
    assert len(layers) == 23
    assert all(type(m) is ResidualSDN and m.spatial_dims == 3 and m.directions == ("right", "down", "in") for m in layers.values())
    up = net.get_submodule("upcat_4.upsample.deconv")
    assert up.sdn.transposed and type(up.conv) is nn.ConvTranspose3d and up.conv.stride == (2, 2, 2)
    _check_gradients(net, x)
    _check_twice(net, "*", OPTS_3D)
    _check_round_trip(_basic_unet3d, "*", net, x, OPTS_3D)


def test_monai_basic_unet_3d_training_steps_move_the_new_layers() -> None:
    x = _x3d()
    target = torch.rand(1, 2, 16, 16, 32, generator=torch.Generator().manual_seed(1))
    net = _basic_unet3d(0)
    chosen = add_spatial_recurrence(net, "down_[23].convs.conv_1.conv", **OPTS_3D)
    assert chosen == ["down_2.convs.conv_1.conv", "down_3.convs.conv_1.conv"]
    trainable = freeze_except_sdn(net)
    assert trainable and all(n.startswith(tuple(f"{c}." for c in chosen)) for n in trainable)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if n not in trainable}
    start = {n: p.detach().clone() for n, p in net.named_parameters() if n in trainable}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), target)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    for n, p in net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
        else:
            # project_out moves at the first step, everything behind it at the second.
            assert not torch.equal(p, start[n]), f"{n} did not move in two steps"


def _plain_conv_unet3d(seed: int) -> nn.Module:
    # nnU-Net's 3D U-Net (from its architecture package, which needs only torch): anisotropic first
    # down-sampling, ConvTranspose3d up, InstanceNorm3d + LeakyReLU.
    unet = pytest.importorskip(
        "dynamic_network_architectures.architectures.unet",
        reason="dynamic-network-architectures (nnU-Net's networks) is not installed",
    )
    torch.manual_seed(seed)
    return unet.PlainConvUNet(
        input_channels=1, n_stages=4, features_per_stage=(4, 8, 16, 16), conv_op=nn.Conv3d, kernel_sizes=3,
        strides=(1, (1, 2, 2), 2, 2), n_conv_per_stage=2, num_classes=2, n_conv_per_stage_decoder=2,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    )  # fmt: skip


def test_nnunet_plain_conv_unet_3d() -> None:
    x = torch.randn(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))

    # Without deep supervision only the last segmentation layer runs: leave the others out.
    def select(name: str, module: nn.Module) -> bool:
        return not name.startswith("decoder.seg_layers.") or name == "decoder.seg_layers.2"

    net = _check_exact(_plain_conv_unet3d, select, x, OPTS_3D)
    layers = sdn_modules(net)
    assert len(layers) == 18 and all(type(m) is ResidualSDN and m.spatial_dims == 3 for m in layers.values())
    assert layers["decoder.transpconvs.0"].sdn.transposed
    assert layers["encoder.stages.1.0.convs.0.conv"].conv.stride == (1, 2, 2)
    _check_gradients(net, x)
    _check_twice(net, select, OPTS_3D)
    _check_round_trip(_plain_conv_unet3d, select, net, x, OPTS_3D)
