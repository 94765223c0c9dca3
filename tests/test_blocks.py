"""Blocks: structure against docs/maths.md, numerics against functional PyTorch, factory and backend helpers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spatialrec import ResidualSDN, SpatialDependencyLayer
from spatialrec.ops import upsample2x
from spatialrec.blocks import (
    BLOCK_KINDS,
    InterpolateProject,
    ResidualSDNBlock,
    SDNBlock,
    VGGBlock,
    count_sdn_layers,
    make_block,
    set_sdn_backend,
)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)


def _randomize_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def test_vgg_block_matches_functional_composition():
    torch.manual_seed(0)
    block = VGGBlock(3, 5).eval()
    _randomize_bn(block)
    x = torch.randn(2, 3, 9, 7)
    c1, b1, _, c2, b2, _ = block.net
    ref = F.relu(_bn(F.conv2d(x, c1.weight, c1.bias, padding=1), b1))
    ref = F.relu(_bn(F.conv2d(ref, c2.weight, c2.bias, padding=1), b2))
    torch.testing.assert_close(block(x), ref)
    assert block(x).shape == (2, 5, 9, 7)


@pytest.mark.parametrize("cls, layer_cls", [(SDNBlock, SpatialDependencyLayer), (ResidualSDNBlock, ResidualSDN)])
def test_sdn_blocks_structure_defaults_and_numerics(cls, layer_cls):
    block = cls(4, 6)
    types = [type(m) for m in block.net]
    assert types == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, layer_cls, nn.BatchNorm2d, nn.ReLU]
    conv, sdn = block.net[0], block.net[3]
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.out_channels == 6
    assert sdn.state_size == 150 and sdn.directions == ("right", "down")
    assert sdn.in_channels == 6 and sdn.out_channels == 6
    inner = sdn if layer_cls is SpatialDependencyLayer else sdn.sdn
    assert inner.project_in.kernel_size == (3, 3) and inner.project_in.padding == (1, 1)
    assert inner.project_in.stride == (1, 1)
    assert block.sdn is sdn

    torch.manual_seed(1)
    small = cls(3, 5, state_size=6, directions=("up", "left"), backend="reference").eval()
    _randomize_bn(small)
    x = torch.randn(2, 3, 7, 9)
    c1, b1, _, layer, b2, _ = small.net
    ref = F.relu(_bn(F.conv2d(x, c1.weight, c1.bias, padding=1), b1))
    ref = F.relu(_bn(layer(ref), b2))
    torch.testing.assert_close(small(x), ref)
    assert small.sdn.directions == ("up", "left")


def test_make_block_kinds_and_errors():
    assert BLOCK_KINDS == ("vgg", "sdn", "residual_sdn")
    assert isinstance(make_block("vgg", 2, 3), VGGBlock)
    b = make_block("sdn", 2, 3, state_size=5, directions=(1, 3))
    assert isinstance(b, SDNBlock) and b.sdn.state_size == 5 and b.sdn.directions == ("left", "up")
    assert isinstance(make_block("residual_sdn", 2, 3, state_size=5), ResidualSDNBlock)
    with pytest.raises(ValueError, match="block kind 'conv'.*vgg"):
        make_block("conv", 2, 3)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        VGGBlock(0, 3)
    with pytest.raises(TypeError, match="out_channels must be an int"):
        SDNBlock(2, 3.0)


def test_set_sdn_backend_and_count():
    model = nn.Sequential(make_block("sdn", 2, 3, state_size=4), make_block("residual_sdn", 3, 3, state_size=4),
                          make_block("vgg", 3, 3))  # fmt: skip
    assert count_sdn_layers(model) == 2
    assert set_sdn_backend(model, "reference") == 2
    assert all(m.backend == "reference" for m in model.modules() if isinstance(m, SpatialDependencyLayer))
    with pytest.raises(ValueError, match="backend"):
        set_sdn_backend(model, "cuda-magic")


def test_sdn_block_gradients_reach_all_parameters():
    torch.manual_seed(0)
    block = ResidualSDNBlock(2, 3, state_size=4)
    block(torch.randn(2, 2, 6, 5)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_published_sdn_block_keys_line_up():
    """A published VGGBlockMixSDN state_dict (net.3 holding pre_cnn / sdn_update_network / post_cnn)
    loads into SDNBlock: non-SDN keys unchanged, net.3.* through convert_published_state_dict."""
    from spatialrec import convert_published_state_dict

    torch.manual_seed(0)
    src = SDNBlock(3, 4, state_size=5)
    ours = src.state_dict()
    published = {}
    for k, v in ours.items():  # the names the published block uses (hand-written mapping)
        k = k.replace("net.3.project_in.", "net.3.pre_cnn.").replace("net.3.project_out.", "net.3.post_cnn.")
        for d in range(2):
            k = k.replace(f"net.3.sweeps.{d}.", f"net.3.sdn_update_network.{d}.cell.")
        published[k] = v.clone()
    assert "net.3.sdn_update_network.1.cell.weight_hh" in published and "net.4.running_var" in published
    sdn_part = {k[len("net.3."):]: v for k, v in published.items() if k.startswith("net.3.")}
    converted = {k: v for k, v in published.items() if not k.startswith("net.3.")}
    converted.update({f"net.3.{k}": v for k, v in convert_published_state_dict(sdn_part).items()})
    dst = SDNBlock(3, 4, state_size=5)
    dst.load_state_dict(converted)  # strict: every key matched
    x = torch.randn(1, 3, 6, 7)
    torch.testing.assert_close(dst.eval()(x), src.eval()(x))


@pytest.mark.parametrize("dims, shape", [(2, (2, 6, 5, 7)), (3, (1, 6, 3, 4, 5))])
def test_interpolate_project_is_upsample_then_conv(dims: int, shape: tuple[int, ...]) -> None:
    """The projection-first forward equals the published order (torch's ``nn.Upsample``, then the
    1x1 convolution, in float64), values and gradients, and keeps the published keys."""
    torch.manual_seed(0)
    up = InterpolateProject(6, 3, spatial_dims=dims).double()
    published = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear" if dims == 2 else "trilinear", align_corners=True),
                              (nn.Conv2d if dims == 2 else nn.Conv3d)(6, 3, kernel_size=1)).double()  # fmt: skip
    assert list(up.state_dict()) == list(published.state_dict()) == ["1.weight", "1.bias"]
    published.load_state_dict(up.state_dict())
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = up(x)
    ref = published(x)
    assert y.shape == (shape[0], 3, *(2 * n for n in shape[2:]))
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, up[1].weight, up[1].bias], g)
    want = torch.autograd.grad(ref, [x, published[1].weight, published[1].bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims, shape", [(2, (2, 6, 5, 7)), (3, (1, 6, 3, 4, 5))])
def test_upsample_op_is_the_interpolation(dims: int, shape: tuple[int, ...]) -> None:
    """``spatialrec::upsample2x`` is torch's interpolation exactly, forward and backward, and a
    well-formed operator (schema, fake, autograd registration)."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = upsample2x(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear" if dims == 2 else "trilinear", align_corners=True)
    assert torch.equal(y, ref) and y.is_contiguous()
    g = torch.randn_like(y)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert torch.autograd.gradcheck(upsample2x, (x,))
    torch.library.opcheck(torch.ops.spatialrec.upsample2x.default, (x,))
    with pytest.raises(ValueError, match="upsample2x takes"):
        upsample2x(torch.randn(2, 3, 4))


def test_compiled_interpolate_project_calls_the_op_and_matches_eager() -> None:
    """Under torch.compile the up-sampling is one ``spatialrec::upsample2x`` node (inductor's
    decomposition is slow on the CPU); the compiled block equals eager at two sizes, values and
    gradients. torch.export keeps the plain interpolation."""
    torch.manual_seed(0)
    up = InterpolateProject(6, 3)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(up, backend=backend, fullgraph=True, dynamic=True)
    for shape in [(2, 6, 5, 7), (1, 6, 8, 4)]:
        x = torch.randn(*shape, requires_grad=True)
        y, ref = compiled(x), up(x)
        torch.testing.assert_close(y, ref)
        g = torch.randn_like(y)
        for a, b in zip(torch.autograd.grad(y, [x, up[1].weight], g), torch.autograd.grad(ref, [x, up[1].weight], g)):
            torch.testing.assert_close(a, b)
    targets = {str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("spatialrec.upsample2x") for t in targets), targets
    exported = torch.export.export(up, (torch.randn(1, 6, 5, 7),))
    assert not any("upsample2x" in str(n.target) for n in exported.graph.nodes)


def test_compiled_unet_pp_interpolates_with_the_op() -> None:
    """UNet++'s nested up-sampling takes the same operator under torch.compile, same result."""
    from spatialrec.models import UNetPlusPlus

    torch.manual_seed(0)
    model = UNetPlusPlus(2, 1, depth=2, base_width=4).eval()
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    x = torch.randn(1, 2, 12, 16)
    torch.testing.assert_close(torch.compile(model, backend=backend, fullgraph=True)(x), model(x))
    targets = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    assert sum(t.startswith("spatialrec.upsample2x") for t in targets) == 3, targets  # depth 2: 1 + 2 nodes
