"""effective_receptive_field against hand-computed dependence patterns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialrec import SpatialDependencyLayer, create_model
from spatialrec.analysis import effective_receptive_field, erf_rgb, prediction_rgb, receptive_field_support


def _ones_conv(cin: int = 1, cout: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, (1, 3), padding=(0, 1), bias=False)
    nn.init.ones_(conv.weight)
    return conv


def test_chain_of_convolutions_gives_the_binomial_like_counts():
    # Two 1x3 all-ones convolutions: output[j] = sum over paths, i.e. the counts 1 2 3 2 1.
    net = nn.Sequential(_ones_conv(), _ones_conv())
    erf = effective_receptive_field(net, torch.randn(1, 5, 11), (2, 5))
    expected = torch.zeros(5, 11)
    expected[2, 3:8] = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    torch.testing.assert_close(erf, expected)
    # At the border, zero padding cuts the paths through the padded column: output[0] =
    # h[0] + h[1] = (x[0] + x[1]) + (x[0] + x[1] + x[2]).
    erf0 = effective_receptive_field(net, torch.randn(1, 1, 5, 11), (2, 0))
    torch.testing.assert_close(erf0[2, :3], torch.tensor([2.0, 2.0, 1.0]))
    assert erf0.sum() == 5


def test_channel_aggregation():
    conv = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
    x = torch.randn(2, 4, 4)
    assert effective_receptive_field(conv, x, (1, 2))[1, 2] == 3.0
    assert effective_receptive_field(conv, x, (1, 2), aggregate="sum")[1, 2] == -1.0
    torch.testing.assert_close(effective_receptive_field(conv, x, (1, 2), aggregate="l2")[1, 2], torch.tensor(5.0).sqrt())


@pytest.mark.parametrize("i", [0, 3, 9])
def test_one_down_sweep_reads_only_rows_above_inside_the_cone(i):
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(1, 1, state_size=4, directions=("down",), kernel_size=1, padding=0)
    h, w, j = 10, 12, 5
    erf = effective_receptive_field(layer, torch.randn(1, h, w), (i, j))
    support = receptive_field_support(erf)
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    # Row i reads row i-1 at columns j-1, j, j+1: after i steps, rows r <= i, |col - j| <= i - r.
    cone = (rows <= i) & ((cols - j).abs() <= i - rows)
    assert not (support & ~cone).any(), "influence from outside the sweep's cone"
    assert support[i, j] and support[0, j]
    if i > 0:  # the far corners of the cone are reached too
        assert support[0, max(j - i, 0)] and support[0, min(j + i, w - 1)]
    assert not support[i + 1 :].any()


def test_two_sweeps_reach_everything_and_the_unet_does_not():
    torch.manual_seed(0)
    sdn = SpatialDependencyLayer(1, 1, state_size=4, directions=("right", "down", "left", "up"), kernel_size=1, padding=0)
    assert receptive_field_support(effective_receptive_field(sdn, torch.randn(1, 16, 16), (0, 0))).all()
    unet = create_model("unet", in_channels=1, num_classes=1, depth=1, base_width=4)
    erf = effective_receptive_field(unet, torch.randn(1, 1, 40, 40), (20, 20))
    support = receptive_field_support(erf)
    assert support[20, 20] and not support[0].any() and not support[:, 0].any()


def test_mode_restored_no_parameter_grads_and_errors():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))
    net.train()
    x = torch.randn(1, 1, 6, 6)
    erf = effective_receptive_field(net, x, (3, 3), channel=1)
    assert net.training and all(p.grad is None for p in net.parameters()) and not x.requires_grad
    assert erf.shape == (6, 6) and erf.dtype == torch.float32
    with pytest.raises(ValueError, match="point"):
        effective_receptive_field(net, x, (6, 0))
    with pytest.raises(ValueError, match="channel"):
        effective_receptive_field(net, x, (0, 0), channel=2)
    with pytest.raises(ValueError, match="x must be one input"):
        effective_receptive_field(net, torch.randn(2, 1, 6, 6), (0, 0))
    with pytest.raises(ValueError, match="aggregate"):
        effective_receptive_field(net, x, (0, 0), aggregate="max")
    with pytest.raises(TypeError, match="model"):
        effective_receptive_field(lambda t: t, x, (0, 0))


def test_erf_rgb():
    erf = torch.zeros(4, 5)
    erf[1, 2], erf[0, 0] = 1.0, 1e-6
    img = erf_rgb(erf, decades=4)
    assert img.shape == (4, 5, 3) and img.dtype == torch.uint8
    assert img[1, 2].tolist() == [255, 255, 255] and img[0, 0].tolist() == [0, 0, 0] and img[3, 3].tolist() == [0, 0, 0]
    assert erf_rgb(torch.zeros(2, 2)).sum() == 0


def test_prediction_rgb():
    pred = torch.tensor([[1, 1], [0, 0]])
    target = torch.tensor([[1, 0], [1, 0]])
    img = prediction_rgb(pred, target)
    assert img.dtype == torch.uint8 and img.shape == (2, 2, 3)
    assert img[0, 0].tolist() == [255, 255, 255]  # hit
    assert img[0, 1].tolist() == [230, 40, 40]  # false positive
    assert img[1, 0].tolist() == [40, 90, 230]  # miss
    assert img[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        prediction_rgb(pred, target[0])
