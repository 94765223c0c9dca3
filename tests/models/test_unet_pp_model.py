"""UNet++: shapes, deep supervision, the nested wiring against a hand-written forward, the published placement."""

import io

import pytest
import torch
import torch.nn.functional as F

from spatialrec.blocks import ResidualSDNBlock, SDNBlock, VGGBlock
from spatialrec.models import UNetPlusPlus, published_unet_pp_nodes

TINY = dict(base_width=4, state_size=4)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("size", [(16, 16), (17, 9)])
def test_output_shape_any_size(depth, size):
    model = UNetPlusPlus(3, 2, depth=depth, **TINY)
    assert model(torch.randn(2, 3, *size)).shape == (2, 2, *size)


def test_deep_supervision_returns_one_output_per_nested_decoder():
    torch.manual_seed(0)
    model = UNetPlusPlus(1, 2, depth=3, deep_supervision=True, **TINY).eval()
    outs = model(torch.randn(2, 1, 19, 21))
    assert isinstance(outs, list) and len(outs) == 3
    assert all(o.shape == (2, 2, 19, 21) for o in outs)
    assert not torch.allclose(outs[0], outs[-1])


def test_nested_wiring_matches_published_forward():
    """Depth 3, written out node by node as the published NestedUnet.forward does it."""
    torch.manual_seed(0)
    model = UNetPlusPlus(2, 1, depth=3, encoder_sdn=(0,), decoder_sdn=((0, 2),), **TINY).eval()
    n = model.nodes
    x = torch.randn(1, 2, 16, 24)
    pool = lambda t: F.max_pool2d(t, 2, 2)  # noqa: E731
    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
    x0_0 = n["conv0_0"](x)
    x1_0 = n["conv1_0"](pool(x0_0))
    x0_1 = n["conv0_1"](torch.cat([x0_0, up(x1_0)], 1))
    x2_0 = n["conv2_0"](pool(x1_0))
    x1_1 = n["conv1_1"](torch.cat([x1_0, up(x2_0)], 1))
    x0_2 = n["conv0_2"](torch.cat([x0_0, x0_1, up(x1_1)], 1))
    x3_0 = n["conv3_0"](pool(x2_0))
    x2_1 = n["conv2_1"](torch.cat([x2_0, up(x3_0)], 1))
    x1_2 = n["conv1_2"](torch.cat([x1_0, x1_1, up(x2_1)], 1))
    x0_3 = n["conv0_3"](torch.cat([x0_0, x0_1, x0_2, up(x1_2)], 1))
    torch.testing.assert_close(model(x), model.heads[0](x0_3))
    assert isinstance(n["conv0_0"], ResidualSDNBlock) and isinstance(n["conv0_2"], ResidualSDNBlock)
    assert model.num_sdn_layers() == 2


def test_node_widths_published():
    model = UNetPlusPlus(3, 1, depth=4, base_width=32)
    w = [32, 64, 128, 256, 512]
    for i in range(5):
        assert model.nodes[f"conv{i}_0"].out_channels == w[i]
    for i in range(4):
        for j in range(1, 5 - i):
            node = model.nodes[f"conv{i}_{j}"]
            assert (node.in_channels, node.out_channels) == (j * w[i] + w[i + 1], w[i])
    assert len(model.nodes) == 15


@pytest.mark.parametrize(
    "n_layers, enc, dec, k, exp_enc, exp_dec",
    [
        (4, True, False, 3, {0, 1, 2, 3}, set()),
        (4, True, False, 0, {0, 1}, set()),
        (2, True, False, 3, {0, 1, 2}, set()),
        (4, False, True, 1, set(), {(0, 1)}),
        (4, False, True, 3, set(), {(0, 1), (0, 2), (0, 3)}),
        (4, True, True, 4, {0, 1, 2, 3, 4}, {(0, 1), (0, 2), (0, 3), (3, 1), (2, 2), (1, 3), (0, 4)}),
        (3, False, True, 4, set(), {(0, 1), (0, 2), (0, 3)}),
        (1, True, True, 3, {0, 1}, {(0, 1)}),
    ],
)
def test_published_flags_placement(n_layers, enc, dec, k, exp_enc, exp_dec):
    e, d = published_unet_pp_nodes(n_layers, enc, dec, k)
    assert e == exp_enc and d == exp_dec
    model = UNetPlusPlus.from_published_args(1, 1, n_layers=n_layers, sdn_b_enc=enc, sdn_b_dec=dec,
                                             sdn_n_layers=k, base_width=2, state_size=4)  # fmt: skip
    for name, node in model.nodes.items():
        i, j = map(int, name[4:].split("_"))
        expect = (i in exp_enc) if j == 0 else ((i, j) in exp_dec)
        assert isinstance(node, ResidualSDNBlock if expect else VGGBlock), name
    assert model.num_sdn_layers() == len(exp_enc) + len(exp_dec)


def test_decoder_sdn_levels_and_errors():
    model = UNetPlusPlus(1, 1, depth=3, decoder_sdn=(1,), sdn_block="sdn", **TINY)
    assert model.sdn_nodes()["decoder"] == ((1, 1), (1, 2))
    assert isinstance(model.nodes["conv1_2"], SDNBlock)
    with pytest.raises(ValueError, match=r"node \(2, 2\)"):
        UNetPlusPlus(1, 1, depth=3, decoder_sdn=((2, 2),))
    with pytest.raises(ValueError, match="level 3"):
        UNetPlusPlus(1, 1, depth=3, decoder_sdn=(3,))
    with pytest.raises(TypeError, match="levels \\(int\\) or nodes"):
        UNetPlusPlus(1, 1, depth=3, decoder_sdn=("0_1",))
    with pytest.raises(ValueError, match="n_layers=5"):
        published_unet_pp_nodes(5, True, False, 3)
    with pytest.raises(TypeError, match="deep_supervision must be a bool"):
        UNetPlusPlus(1, 1, deep_supervision=1)
    m = UNetPlusPlus(2, 1, depth=2, **TINY)
    with pytest.raises(ValueError, match=r"too small for depth=2"):
        m(torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match="expected in_channels=2"):
        m(torch.randn(1, 3, 8, 8))


def test_gradients_and_state_dict_round_trip():
    torch.manual_seed(0)
    kw = dict(depth=2, deep_supervision=True, encoder_sdn=(0,), decoder_sdn=((0, 1),), **TINY)
    a = UNetPlusPlus(1, 1, **kw)
    x = torch.randn(2, 1, 9, 12)
    sum(o.square().mean() for o in a(x)).backward()
    for name, p in a.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = UNetPlusPlus(1, 1, **kw)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for oa, ob in zip(a.eval()(x), b.eval()(x)):
        torch.testing.assert_close(oa, ob)
