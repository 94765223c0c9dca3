"""Tests of spatialrec.convert on home-made networks (MONAI / smp: tests/interop/)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from spatialrec import ResidualSDN, SpatialDependencyLayer
from spatialrec.convert import add_spatial_recurrence, freeze_except_sdn, sdn_modules

# A sweep visits the lines one after the other: one direction keeps most tests fast; the
# exactness and gradient tests use two, crossing horizontal and vertical sweeps.
FAST = {"state_size": 4, "directions": ("down",)}
FULL = {"state_size": 4, "directions": ("right", "down")}


class TinyNet(nn.Module):
    """Strided, dilated, grouped, reflect-padded, bias-free and transposed convolutions + BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grp = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect")
        self.same = nn.Conv2d(8, 8, (1, 3), padding="same")
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(6, 4, 2, stride=2, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(10, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.bn(self.stem(x)))
        d = torch.relu(self.down(s))
        d = torch.relu(self.dil(d))
        d = torch.relu(self.grp(d))
        d = torch.relu(self.same(d))
        u = torch.relu(self.up(d))
        u2 = self.pool(self.up2(u))
        return self.head(torch.cat([s, u2], dim=1))


ALL_CONVS = ["stem", "down", "dil", "grp", "same", "up", "up2", "head"]


def _net(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet().to(dtype)
    # Non-trivial BatchNorm statistics, so eval mode is not the identity.
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _x(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 2, 8, 10, generator=torch.Generator().manual_seed(7), dtype=dtype)


def _nested_sdn(model: nn.Module) -> list[str]:
    """Names of spatial-recurrence layers living inside a ResidualSDN's conv or another ResidualSDN."""
    bad = []
    for name, m in model.named_modules():
        if isinstance(m, ResidualSDN):
            for sub_name, sub in m.named_modules():
                if sub_name and isinstance(sub, ResidualSDN):
                    bad.append(f"{name}.{sub_name}")
            if not type(m.conv) in (nn.Conv2d, nn.ConvTranspose2d):
                bad.append(f"{name}.conv")
    return bad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converted_home_made_net_is_bit_exact_at_init(dtype: torch.dtype) -> None:
    net = _net(dtype=dtype).eval()
    x = _x(dtype)
    with torch.no_grad():
        before = net(x)
    names = add_spatial_recurrence(net, "*", **FULL)
    assert names == ALL_CONVS
    for name in ALL_CONVS:
        layer = net.get_submodule(name)
        assert isinstance(layer, ResidualSDN)
        assert not layer.training
        assert all(p.dtype == dtype for p in layer.parameters())
    with torch.no_grad():
        after = net(x)
    assert after.shape == before.shape == (2, 1, 8, 10)
    assert (after - before).abs().max().item() <= 1e-5
    # gate_init=0.5 scales by exactly 2 and multiplies by exactly 0.5: no rounding at all.
    assert torch.equal(after, before)


def test_conv_branch_keeps_the_original_configuration() -> None:
    net = _net()
    originals = {n: net.get_submodule(n) for n in ALL_CONVS}
    add_spatial_recurrence(net, "*", **FAST)
    for name, orig in originals.items():
        branch = net.get_submodule(name).conv
        assert type(branch) is type(orig)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "output_padding"):  # fmt: skip
            assert getattr(branch, attr) == getattr(orig, attr), (name, attr)
        assert (branch.bias is None) == (orig.bias is None)
        torch.testing.assert_close(branch.weight, 2 * orig.weight, rtol=0, atol=0)
    # Dilation reaches the SDN branch too (same output size); groups stay on the conv branch only.
    assert net.dil.sdn.project_in.dilation == (2, 2)
    assert net.grp.sdn.project_in.groups == 1


@pytest.mark.parametrize("gate_init", [0.1, 0.9])
def test_other_gate_init_is_exact_to_rounding(gate_init: float) -> None:
    net = _net().eval()
    x = _x()
    with torch.no_grad():
        before = net(x)
    add_spatial_recurrence(net, "*", **FAST, gate_init=gate_init)
    with torch.no_grad():
        after = net(x)
    assert (after - before).abs().max().item() <= 1e-5
    proj = net.down.sdn.project_out
    out = net.down.out_channels
    assert torch.count_nonzero(proj.weight) == 0
    assert torch.count_nonzero(proj.bias[:out]) == 0
    torch.testing.assert_close(proj.bias[out:], torch.full((out,), math.log(gate_init / (1 - gate_init))))


def test_train_mode_output_matches_too() -> None:
    # In train mode BatchNorm uses batch statistics: both models see the same batch.
    net = _net().train()
    ref = _net().train()
    x = _x()
    add_spatial_recurrence(net, "*", **FAST)
    assert net.stem.training
    assert torch.equal(net(x), ref(x))


def _grads(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in layer.named_parameters()}


def test_gradients_reach_the_new_layers() -> None:
    net = _net().train()
    add_spatial_recurrence(net, "*", **FULL)
    x = _x()
    target = torch.rand(2, 1, 8, 10, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)

    def step() -> None:
        opt.zero_grad()
        nn.functional.mse_loss(net(x), target).backward()

    step()
    for name in ALL_CONVS:
        grads = _grads(net.get_submodule(name))
        for pname, g in grads.items():
            nonzero = bool(torch.count_nonzero(g))
            if pname.startswith(("conv.", "sdn.project_out.")):
                assert nonzero, f"{name}.{pname} got no gradient at the first step"
            else:
                # project_in and the sweeps sit behind the zero-initialised project_out weights.
                assert not nonzero, f"{name}.{pname} unexpectedly got gradient at the first step"
    opt.step()
    step()
    for name in ALL_CONVS:
        for pname, g in _grads(net.get_submodule(name)).items():
            assert torch.count_nonzero(g) > 0, f"{name}.{pname} got no gradient after one step"


def test_state_dict_round_trip() -> None:
    src = _net(seed=0)
    add_spatial_recurrence(src, "*", **FAST)
    # Move away from the initial (exact) point so that the round trip carries real SDN weights.
    opt = torch.optim.Adam(src.parameters(), lr=1e-2)
    for _ in range(1):
        opt.zero_grad()
        src(_x()).square().mean().backward()
        opt.step()
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    buffer.seek(0)

    dst = _net(seed=1)
    add_spatial_recurrence(dst, "*", **FAST)
    dst.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    src.eval()
    dst.eval()
    with torch.no_grad():
        assert torch.equal(src(_x()), dst(_x()))
        assert not torch.equal(src(_x()), _net(seed=0).eval()(_x()))


def test_converting_twice_is_refused_or_harmless() -> None:
    net = _net().eval()
    x = _x()
    with torch.no_grad():
        before = net(x)
    assert add_spatial_recurrence(net, ["down", "up"], **FAST) == ["down", "up"]
    structure = repr(net)
    # Everything converted once more by pattern: only the still plain convolutions are taken.
    rest = add_spatial_recurrence(net, "*", **FAST)
    assert rest == [n for n in ALL_CONVS if n not in ("down", "up")]
    assert _nested_sdn(net) == []
    assert repr(net) != structure
    structure = repr(net)
    with pytest.raises(ValueError, match="matches no convolution"):
        add_spatial_recurrence(net, "*", **FAST)
    with pytest.raises(ValueError, match="inside the spatial-recurrence layer 'down'"):
        add_spatial_recurrence(net, ["down.conv"], **FAST)
    with pytest.raises(ValueError, match="inside the spatial-recurrence layer 'up'"):
        add_spatial_recurrence(net, ["up.sdn.project_in"], **FAST)
    with pytest.raises(ValueError, match="already a spatial-recurrence layer"):
        add_spatial_recurrence(net, ["down"], **FAST)
    with pytest.raises(ValueError, match="matches no convolution"):
        add_spatial_recurrence(net, lambda name, m: True, **FAST)
    assert repr(net) == structure
    assert _nested_sdn(net) == []
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_select_forms() -> None:
    net = _net()
    assert add_spatial_recurrence(net, "d*", **FAST) == ["down", "dil"]
    net = _net()
    assert add_spatial_recurrence(net, ("head", "stem", "head"), **FAST) == ["stem", "head"]
    net = _net()
    chosen = add_spatial_recurrence(
        net, lambda name, m: isinstance(m, nn.ConvTranspose2d), **FAST
    )
    assert chosen == ["up", "up2"]
    assert net.up.sdn.transposed and net.up.sdn.project_in.output_padding == (1, 1)
    assert list(sdn_modules(net)) == ["up", "up2"]


def test_nested_names_and_patterns_in_containers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
        nn.ModuleDict({"a": nn.Conv2d(4, 4, 3, padding=1)}),
    )

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net[1]["a"](net[0](x))

    x = torch.randn(1, 1, 6, 6)
    before = forward(x)
    assert add_spatial_recurrence(net, "1.*", **FAST) == ["1.a"]
    assert add_spatial_recurrence(net, ["0.0"], **FAST) == ["0.0"]
    assert isinstance(net[0][0], ResidualSDN) and isinstance(net[1]["a"], ResidualSDN)
    assert torch.equal(forward(x), before)


def test_selection_errors_leave_the_model_unchanged() -> None:
    net = _net()
    structure = repr(net)
    with pytest.raises(ValueError, match=r"pattern 'encoder\.\*'\) matches no convolution"):
        add_spatial_recurrence(net, "encoder.*", **FAST)
    with pytest.raises(ValueError, match="'nope', which is not a sub-module"):
        add_spatial_recurrence(net, ["down", "nope"], **FAST)
    with pytest.raises(TypeError, match="'bn' is a BatchNorm2d"):
        add_spatial_recurrence(net, ["stem", "bn"], **FAST)
    with pytest.raises(ValueError, match="names"):
        add_spatial_recurrence(net, [], **FAST)
    with pytest.raises(TypeError, match="select must be"):
        add_spatial_recurrence(net, 3, **FAST)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return a bool"):
        add_spatial_recurrence(net, lambda name, m: name, **FAST)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="gate_init"):
        add_spatial_recurrence(net, "*", **FAST, gate_init=1.0)
    with pytest.raises(ValueError, match="state_size"):
        add_spatial_recurrence(net, "*", state_size=0)
    with pytest.raises(ValueError, match="direction"):
        add_spatial_recurrence(net, "*", state_size=4, directions=("sideways",))
    with pytest.raises(TypeError, match="model must be"):
        add_spatial_recurrence("net", "*")  # type: ignore[arg-type]
    assert repr(net) == structure
    assert sdn_modules(net) == {}


def test_model_that_is_a_conv_is_explained() -> None:
    with pytest.raises(ValueError, match="model itself is a convolution"):
        add_spatial_recurrence(nn.Conv2d(1, 1, 3), "*")


class _MyConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_unfaithful_convolutions_are_refused() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), _MyConv(2, 2, 3))
    with pytest.raises(TypeError, match="'1' is a .*_MyConv"):
        add_spatial_recurrence(net, "*")
    assert type(net[0]) is nn.Conv2d  # nothing replaced, not even the valid one

    net = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="parametrized"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    net[0].register_forward_hook(lambda m, i, o: o + 1)
    with pytest.raises(ValueError, match="hooks"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(nn.LazyConv2d(2, 3))
    with pytest.raises(ValueError, match="lazy"):
        add_spatial_recurrence(net, "*")

    with pytest.raises(TypeError, match="Conv3d"):
        add_spatial_recurrence(nn.Sequential(nn.Conv3d(1, 1, 1)), ["0"])


def test_shared_convolution_is_replaced_everywhere_by_one_layer() -> None:
    torch.manual_seed(0)
    shared = nn.Conv2d(3, 3, 3, padding=1)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    x = torch.randn(1, 3, 5, 5)
    before = net(x)
    assert add_spatial_recurrence(net, "*", **FAST) == ["0"]
    assert net[0] is net[2] and isinstance(net[0], ResidualSDN)
    assert torch.equal(net(x), before)


def test_requires_grad_of_the_copied_weights_is_kept() -> None:
    net = _net()
    net.stem.weight.requires_grad_(False)
    add_spatial_recurrence(net, ["stem"], **FAST)
    assert not net.stem.conv.weight.requires_grad
    assert all(p.requires_grad for p in net.stem.sdn.parameters())


def test_sdn_modules_and_freeze() -> None:
    net = _net()
    assert sdn_modules(net) == {}
    with pytest.raises(ValueError, match="no spatial-recurrence layer"):
        freeze_except_sdn(net)
    add_spatial_recurrence(net, ["down", "up"], **FAST)
    layers = sdn_modules(net)
    assert list(layers) == ["down", "up"] and all(isinstance(m, ResidualSDN) for m in layers.values())

    trainable = freeze_except_sdn(net)
    expected = [n for n, _ in net.named_parameters() if n.startswith(("down.", "up."))]
    assert trainable == expected and len(expected) > 0
    for name, p in net.named_parameters():
        assert p.requires_grad == (name in expected), name
    net(_x()).sum().backward()
    assert net.stem.weight.grad is None and net.down.conv.weight.grad is not None

    trainable = freeze_except_sdn(net, conv_branch=False)
    assert "down.conv.weight" not in trainable and "down.sdn.project_out.weight" in trainable
    assert not net.up.conv.weight.requires_grad

    # A model's own SDN layers count too, listed once (not their inner layers).
    own = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), SpatialDependencyLayer(4, 4, state_size=4, directions=("down",)))
    assert list(sdn_modules(own)) == ["1"]
    assert add_spatial_recurrence(own, "*", **FAST) == ["0"]
    assert list(sdn_modules(own)) == ["0", "1"]


def test_device_of_the_replaced_conv_is_kept() -> None:
    # The meta device stands in for an accelerator: nothing may silently land on the CPU.
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, device="meta"), nn.ConvTranspose2d(3, 2, 2, 2, device="meta"))
    add_spatial_recurrence(net, "*", **FAST)
    for name, p in net.named_parameters():
        assert p.device.type == "meta", name
