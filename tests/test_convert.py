"""Tests of spatialrec.convert on home-made networks (MONAI / smp: tests/interop/).

Most tests run twice, on a 2D network and on the same network built from the 3D modules
(``spatial_dims=3``): the conversion promises the same in both.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

import spatialrec
from spatialrec import ResidualSDN, SpatialDependencyLayer
from spatialrec.convert import add_spatial_recurrence, freeze_except_sdn, sdn_modules

# A sweep visits the lines (planes) one after the other: one direction keeps most tests fast; the
# exactness and gradient tests use the default directions, crossing two sweeps in 2D and three in 3D.
FAST = {"state_size": 4, "directions": ("down",)}
FULL = {"state_size": 4}

DIMS = pytest.mark.parametrize("dims", [2, 3])
DEFAULT_DIRECTIONS = {2: ("right", "down"), 3: ("right", "down", "in")}


def _nn(kind: str, dims: int) -> type[nn.Module]:
    """``torch.nn.<kind><dims>d``, e.g. ``_nn("Conv", 3) is nn.Conv3d``."""
    return getattr(nn, f"{kind}{dims}d")


class TinyNet(nn.Module):
    """Strided, dilated, grouped, reflect-padded, bias-free and transposed convolutions + BatchNorm,
    in 2D or 3D."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        conv, up = _nn("Conv", dims), _nn("ConvTranspose", dims)
        self.stem = conv(2, 6, 3, padding=1, bias=False)
        self.bn = _nn("BatchNorm", dims)(6)
        self.down = conv(6, 8, 3, stride=2, padding=1)
        self.dil = conv(8, 8, 3, padding=2, dilation=2)
        self.grp = conv(8, 8, 3, padding=1, groups=2, padding_mode="reflect")
        self.same = conv(8, 8, (1,) * (dims - 1) + (3,), padding="same")
        self.up = up(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.up2 = up(6, 4, 2, stride=2, bias=False)
        self.pool = _nn("AvgPool", dims)(2)
        self.head = conv(10, 1, 1)

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
SIZES = {2: (8, 10), 3: (4, 6, 8)}


def _net(seed: int = 0, dtype: torch.dtype = torch.float32, dims: int = 2) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(dims).to(dtype)
    # Non-trivial BatchNorm statistics, so eval mode is not the identity.
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _x(dtype: torch.dtype = torch.float32, dims: int = 2) -> torch.Tensor:
    return torch.randn(2, 2, *SIZES[dims], generator=torch.Generator().manual_seed(7), dtype=dtype)


def _target(dims: int) -> torch.Tensor:
    return torch.rand(2, 1, *SIZES[dims], generator=torch.Generator().manual_seed(3))


def _nested_sdn(model: nn.Module) -> list[str]:
    """Names of spatial-recurrence layers living inside a ResidualSDN's conv or another ResidualSDN."""
    residual = ResidualSDN
    bad = []
    for name, m in model.named_modules():
        if isinstance(m, residual):
            for sub_name, sub in m.named_modules():
                if sub_name and isinstance(sub, residual):
                    bad.append(f"{name}.{sub_name}")
            if type(m.conv) not in (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d):
                bad.append(f"{name}.conv")
    return bad


@DIMS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converted_home_made_net_is_bit_exact_at_init(dims: int, dtype: torch.dtype) -> None:
    net = _net(dtype=dtype, dims=dims).eval()
    x = _x(dtype, dims)
    with torch.no_grad():
        before = net(x)
    names = add_spatial_recurrence(net, "*", **FULL)
    assert names == ALL_CONVS
    for name in ALL_CONVS:
        layer = net.get_submodule(name)
        assert type(layer) is ResidualSDN and layer.spatial_dims == dims
        assert layer.directions == DEFAULT_DIRECTIONS[dims]
        assert not layer.training
        assert all(p.dtype == dtype for p in layer.parameters())
    with torch.no_grad():
        after = net(x)
    assert after.shape == before.shape == (2, 1, *SIZES[dims])
    assert (after - before).abs().max().item() <= 1e-5
    # gate_init=0.5 scales by exactly 2 and multiplies by exactly 0.5: no rounding at all.
    assert torch.equal(after, before)


@DIMS
def test_conv_branch_keeps_the_original_configuration(dims: int) -> None:
    net = _net(dims=dims)
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
    assert net.dil.sdn.project_in.dilation == (2,) * dims
    assert net.grp.sdn.project_in.groups == 1
    assert net.grp.sdn.project_in.padding_mode == "zeros"
    assert type(net.up.sdn.project_in) is _nn("ConvTranspose", dims)


@DIMS
@pytest.mark.parametrize("gate_init", [0.1, 0.9])
def test_other_gate_init_is_exact_to_rounding(dims: int, gate_init: float) -> None:
    net = _net(dims=dims).eval()
    x = _x(dims=dims)
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


@DIMS
def test_train_mode_output_matches_too(dims: int) -> None:
    # In train mode BatchNorm uses batch statistics: both models see the same batch.
    net = _net(dims=dims).train()
    ref = _net(dims=dims).train()
    x = _x(dims=dims)
    add_spatial_recurrence(net, "*", **FAST)
    assert net.stem.training
    assert torch.equal(net(x), ref(x))


def _grads(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in layer.named_parameters()}


@DIMS
def test_gradients_reach_the_new_layers(dims: int) -> None:
    net = _net(dims=dims).train()
    add_spatial_recurrence(net, "*", **FULL)
    x = _x(dims=dims)
    target = _target(dims)
    # Adam moves every parameter with a non-zero gradient by about lr, however small the gradient.
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

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
    start = {name: p.detach().clone() for name, p in sdn_modules(net)["down"].sdn.named_parameters()}
    opt.step()
    moved = {name for name, p in sdn_modules(net)["down"].sdn.named_parameters() if not torch.equal(p, start[name])}
    assert moved == {"project_out.weight", "project_out.bias"}
    step()
    for name in ALL_CONVS:
        for pname, g in _grads(net.get_submodule(name)).items():
            assert torch.count_nonzero(g) > 0, f"{name}.{pname} got no gradient after one step"
    opt.step()
    assert all(not torch.equal(p, start[name]) for name, p in sdn_modules(net)["down"].sdn.named_parameters())


@DIMS
def test_state_dict_round_trip(dims: int) -> None:
    src = _net(seed=0, dims=dims)
    add_spatial_recurrence(src, "*", **FAST)
    # Move away from the initial (exact) point so that the round trip carries real SDN weights.
    opt = torch.optim.Adam(src.parameters(), lr=1e-2)
    opt.zero_grad()
    src(_x(dims=dims)).square().mean().backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    buffer.seek(0)

    dst = _net(seed=1, dims=dims)
    add_spatial_recurrence(dst, "*", **FAST)
    dst.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    src.eval()
    dst.eval()
    x = _x(dims=dims)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
        assert not torch.equal(src(x), _net(seed=0, dims=dims).eval()(x))


@DIMS
def test_converting_twice_is_refused_or_harmless(dims: int) -> None:
    net = _net(dims=dims).eval()
    x = _x(dims=dims)
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
    with pytest.raises(TypeError, match="gate_init"):
        add_spatial_recurrence(net, "*", **FAST, gate_init="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state_size"):
        add_spatial_recurrence(net, "*", state_size=0)
    with pytest.raises(TypeError, match="state_size"):
        add_spatial_recurrence(net, "*", state_size=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'stem' .*direction"):
        add_spatial_recurrence(net, "*", state_size=4, directions=("sideways",))
    with pytest.raises(TypeError, match="model must be"):
        add_spatial_recurrence("net", "*")  # type: ignore[arg-type]
    assert repr(net) == structure
    assert sdn_modules(net) == {}


def test_numpy_integer_state_size_is_accepted() -> None:
    # e.g. a sweep over np.arange(...) or a value read from a NumPy config array
    net = _net()
    names = add_spatial_recurrence(net, "*", state_size=np.int64(3))
    assert names
    for layer in sdn_modules(net).values():
        assert isinstance(layer, ResidualSDN)
        assert type(layer.sdn.state_size) is int and layer.sdn.state_size == 3
    with pytest.raises(TypeError, match="state_size must be an int, got bool True"):
        add_spatial_recurrence(_net(), "*", state_size=True)  # type: ignore[arg-type]


@DIMS
def test_model_that_is_a_conv_is_explained(dims: int) -> None:
    with pytest.raises(ValueError, match="model itself is a convolution"):
        add_spatial_recurrence(_nn("Conv", dims)(1, 1, 3), "*")


class _MyConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _MyConv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _MyConvTranspose3d(nn.ConvTranspose3d):
    pass


@DIMS
def test_unfaithful_convolutions_are_refused(dims: int) -> None:
    conv = _nn("Conv", dims)
    my_conv = {2: _MyConv, 3: _MyConv3d}[dims]
    net = nn.Sequential(conv(1, 2, 3), my_conv(2, 2, 3))
    with pytest.raises(TypeError, match=rf"'1' is a .*_MyConv.*subclass of Conv{dims}d"):
        add_spatial_recurrence(net, "*")
    assert type(net[0]) is conv  # nothing replaced, not even the valid one

    net = nn.Sequential(nn.utils.parametrizations.weight_norm(conv(1, 2, 3)))
    with pytest.raises(ValueError, match="parametrized"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(conv(1, 2, 3))
    net[0].register_forward_hook(lambda m, i, o: o + 1)
    with pytest.raises(ValueError, match="hooks"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(conv(1, 2, 3))
    net[0].register_full_backward_pre_hook(lambda m, g: g)
    with pytest.raises(ValueError, match="hooks"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(_nn("LazyConv", dims)(2, 3))
    with pytest.raises(ValueError, match="lazy"):
        add_spatial_recurrence(net, "*")

    net = nn.Sequential(conv(1, 2, 3, bias=False))
    net[0].weight = nn.Parameter(net[0].weight.detach().to(torch.int32), requires_grad=False)
    with pytest.raises(TypeError, match=r"'0' has weights of dtype torch\.int32"):
        add_spatial_recurrence(net, "*")

    transposed = _nn("ConvTranspose", dims)(1, 2, 3)
    transposed.padding_mode = "reflect"  # the constructor refuses it; set afterwards, forward ignores it
    with pytest.raises(ValueError, match=rf"ConvTranspose{dims}d with padding_mode='reflect'"):
        add_spatial_recurrence(nn.Sequential(transposed), "*")


def test_subclass_of_a_transposed_3d_conv_is_named() -> None:
    with pytest.raises(TypeError, match="subclass of ConvTranspose3d.*Conv3d"):
        add_spatial_recurrence(nn.Sequential(_MyConvTranspose3d(1, 1, 2)), ["0"])


def test_other_convolutions_are_not_candidates() -> None:
    net = nn.Sequential(nn.Conv1d(1, 1, 3))
    with pytest.raises(ValueError, match="no Conv2d/ConvTranspose2d/Conv3d/ConvTranspose3d left"):
        add_spatial_recurrence(net, "*")
    with pytest.raises(TypeError, match="'0' is a Conv1d; select must name .*Conv3d"):
        add_spatial_recurrence(net, ["0"])


def test_mixed_2d_and_3d_model_gets_one_replacement_per_dimensionality() -> None:
    torch.manual_seed(0)
    net = nn.ModuleDict({"slice": nn.Conv2d(1, 3, 3, padding=1), "volume": nn.Conv3d(1, 3, 3, padding=1)})
    x2, x3 = torch.randn(1, 1, 6, 7), torch.randn(1, 1, 4, 6, 7)
    with torch.no_grad():
        before = (net["slice"](x2), net["volume"](x3))
    structure = repr(net)
    # "in" is a 3D direction only: refused for the 2D conv, before anything is replaced.
    with pytest.raises(ValueError, match="'slice' \\(Conv2d\\).*'in'"):
        add_spatial_recurrence(net, "*", state_size=4, directions=("in",))
    assert repr(net) == structure

    assert add_spatial_recurrence(net, "*", state_size=4) == ["slice", "volume"]
    assert type(net["slice"]) is ResidualSDN and net["slice"].directions == ("right", "down")
    assert type(net["volume"]) is ResidualSDN and net["volume"].spatial_dims == 3 and net["volume"].directions == ("right", "down", "in")
    with torch.no_grad():
        assert torch.equal(net["slice"](x2), before[0])
        assert torch.equal(net["volume"](x3), before[1])
    # Directions valid in both dimensions apply to both.
    other = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv3d(1, 1, 1))
    add_spatial_recurrence(other, "*", state_size=4, directions=(3, "right"))
    assert other[0].directions == other[1].directions == ("up", "right")


def test_requires_grad_of_the_copied_weights_is_kept() -> None:
    net = _net()
    net.stem.weight.requires_grad_(False)
    add_spatial_recurrence(net, ["stem"], **FAST)
    assert not net.stem.conv.weight.requires_grad
    assert all(p.requires_grad for p in net.stem.sdn.parameters())


@DIMS
def test_sdn_modules_and_freeze(dims: int) -> None:
    net = _net(dims=dims)
    assert sdn_modules(net) == {}
    with pytest.raises(ValueError, match="no spatial-recurrence layer"):
        freeze_except_sdn(net)
    add_spatial_recurrence(net, ["down", "up"], **FAST)
    layers = sdn_modules(net)
    assert list(layers) == ["down", "up"] and all(type(m) is ResidualSDN and m.spatial_dims == dims for m in layers.values())

    trainable = freeze_except_sdn(net)
    expected = [n for n, _ in net.named_parameters() if n.startswith(("down.", "up."))]
    assert trainable == expected and len(expected) > 0
    for name, p in net.named_parameters():
        assert p.requires_grad == (name in expected), name
    net(_x(dims=dims)).sum().backward()
    assert net.stem.weight.grad is None and net.down.conv.weight.grad is not None

    trainable = freeze_except_sdn(net, conv_branch=False)
    assert "down.conv.weight" not in trainable and "down.sdn.project_out.weight" in trainable
    assert not net.up.conv.weight.requires_grad

    # A model's own SDN layers count too, listed once (not their inner layers).
    own = nn.Sequential(
        _nn("Conv", dims)(1, 4, 3, padding=1), SpatialDependencyLayer(4, 4, state_size=4, directions=("down",), spatial_dims=dims)
    )
    assert list(sdn_modules(own)) == ["1"]
    assert add_spatial_recurrence(own, "*", **FAST) == ["0"]
    assert list(sdn_modules(own)) == ["0", "1"]


def test_sdn_modules_finds_the_layers_of_sdn_unet3d() -> None:
    model = spatialrec.create_model("sdn_unet3d", in_channels=1)
    layers = sdn_modules(model)
    expected = [name for name, m in model.named_modules() if type(m) is SpatialDependencyLayer and m.spatial_dims == 3]
    assert expected and list(layers) == expected
    # Their convolutions are not convertible again, every other convolution is.
    converted = add_spatial_recurrence(model, "*", **FAST)
    assert not any(name.startswith(tuple(f"{n}." for n in expected)) for name in converted)
    assert len(sdn_modules(model)) == len(expected) + len(converted)
    trainable = freeze_except_sdn(model)
    prefixes = tuple(f"{n}." for n in sdn_modules(model))
    assert trainable == [name for name, _ in model.named_parameters() if name.startswith(prefixes)]
    assert any(name.startswith(tuple(f"{n}." for n in layers)) for name in trainable)


@DIMS
def test_device_of_the_replaced_conv_is_kept(dims: int) -> None:
    # The meta device stands in for an accelerator: nothing may silently land on the CPU.
    net = nn.Sequential(
        _nn("Conv", dims)(2, 3, 3, padding=1, device="meta"), _nn("ConvTranspose", dims)(3, 2, 2, 2, device="meta")
    )
    add_spatial_recurrence(net, "*", **FAST)
    for name, p in net.named_parameters():
        assert p.device.type == "meta", name


def test_a_conv_reached_by_several_paths_is_replaced_under_each() -> None:
    # A conv registered twice in one parent, and a block shared by two parents: every name
    # under which the conv is reachable gets the (one) replacement.
    conv = nn.Conv2d(2, 3, 3, padding=1)
    block = nn.Sequential(conv, nn.ReLU())
    model = nn.Module()
    model.a = block
    model.b = block
    model.a.add_module("again", conv)
    x = torch.randn(1, 2, 5, 6)
    want = conv(x)
    assert add_spatial_recurrence(model, ["a.0"], **FAST) == ["a.0"]
    new = model.a[0]
    assert isinstance(new, ResidualSDN)
    assert model.b[0] is new and model.a.again is new
    torch.testing.assert_close(new(x), want, rtol=0, atol=0)
