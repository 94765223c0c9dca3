"""Loading published SDN weights reproduces the published outputs.

`Published*` below re-state the published implementation's strategy independently of
spatialrec: parameter names as it saves them, per-line in-place writes into the state tensor,
zero padding with torch.cat, and its loop bound (the number of lines is taken from dim 2 even in
the horizontal directions, so its horizontal sweeps are only right on square inputs).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spatialrec import ResidualSDN, SpatialDependencyLayer, convert_published_state_dict


class PublishedCell(nn.Module):
    def __init__(self, s: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(3 * s, 3 * s))
        self.bias_ih = nn.Parameter(torch.empty(3 * s))
        self.weight_hh = nn.Parameter(torch.empty(3 * s, s))
        self.bias_hh = nn.Parameter(torch.empty(3 * s))
        for w in self.parameters():
            w.data.uniform_(-1 / math.sqrt(s), 1 / math.sqrt(s))

    def forward(self, neighbours: list[torch.Tensor], prior: torch.Tensor) -> torch.Tensor:
        gi = torch.addmm(self.bias_ih, torch.cat(neighbours, dim=1), self.weight_ih.t())
        gh = torch.addmm(self.bias_hh, prior, self.weight_hh.t())
        s = prior.shape[1]
        r = torch.sigmoid(gi[:, :s] + gh[:, :s])
        z = torch.sigmoid(gi[:, s : 2 * s] + gh[:, s : 2 * s])
        n = torch.tanh(gi[:, 2 * s :] + r * gh[:, 2 * s :])
        return n * z + prior * (1 - z)


class PublishedSweep(nn.Module):
    def __init__(self, s: int, code: int) -> None:
        super().__init__()
        self.s, self.code = s, code
        self.cell = PublishedCell(s)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        states = states.clone()
        b, s, n = states.shape[0], self.s, states.shape[2]  # dim 2, as published
        horizontal = self.code in (0, 1)
        order = range(1, n) if self.code in (0, 2) else range(n - 2, -1, -1)
        step = -1 if self.code in (0, 2) else 1
        for d in order:
            prev = states[:, :, :, d + step] if horizontal else states[:, :, d + step, :]
            z = torch.zeros(b, s, 1)
            prev = torch.cat([z, prev, z], dim=2).transpose(1, 2)  # (B, L+2, S)
            prior = (states[:, :, :, d] if horizontal else states[:, :, d, :]).transpose(1, 2).reshape(-1, s)
            nb = [prev[:, :-2].reshape(-1, s), prev[:, 1:-1].reshape(-1, s), prev[:, 2:].reshape(-1, s)]
            new = self.cell(nb, prior).reshape(b, -1, s).transpose(1, 2)
            if horizontal:
                states[:, :, :, d] = new
            else:
                states[:, :, d, :] = new
        return states


class PublishedSDN(nn.Module):
    def __init__(self, cin, cout, s, dirs, k, stride, pad, upsample=False):
        super().__init__()
        conv = nn.ConvTranspose2d if upsample else nn.Conv2d
        self.pre_cnn = conv(cin, s, k, stride, pad)
        self.sdn_update_network = nn.Sequential(*[PublishedSweep(s, d) for d in dirs])
        self.post_cnn = nn.Conv2d(s, cout, 1)

    def forward(self, x):
        return self.post_cnn(self.sdn_update_network(torch.tanh(self.pre_cnn(x))))


class PublishedResSDN(nn.Module):
    def __init__(self, cin, cout, s, dirs, k, stride, pad, upsample=False):
        super().__init__()
        self.sdn = PublishedSDN(cin, 2 * cout, s, dirs, k, stride, pad, upsample)
        self.cnn = (nn.ConvTranspose2d if upsample else nn.Conv2d)(cin, cout, k, stride, pad)

    def forward(self, x):
        s, g = self.sdn(x).chunk(2, 1)
        g = torch.sigmoid(g)
        return g * self.cnn(x) + (1 - g) * s


DIRECTION_SETS = [(0,), (1,), (2,), (3,), (0, 2), (2, 0), (1, 3), (0, 1, 2, 3), (3, 3)]
GEOMETRIES = [  # (stride, transposed)
    (1, False),
    (2, False),
    (2, True),
]


def _pair(published_cls, ours_cls, dirs, stride, transposed, s=5):
    torch.manual_seed(hash((dirs, stride, transposed)) % 2**31)
    pub = published_cls(3, 4, s, dirs, 3, stride, 1, transposed)
    ours = ours_cls(3, 4, state_size=s, directions=dirs, kernel_size=3, stride=stride, padding=1, transposed=transposed)
    ours.load_state_dict(convert_published_state_dict(pub.state_dict()))
    return pub.eval(), ours.eval()


@pytest.mark.parametrize("stride,transposed", GEOMETRIES)
@pytest.mark.parametrize("dirs", DIRECTION_SETS)
@pytest.mark.parametrize("classes", [(PublishedSDN, SpatialDependencyLayer), (PublishedResSDN, ResidualSDN)])
def test_converted_weights_reproduce_published_outputs_square(classes, dirs, stride, transposed):
    pub, ours = _pair(*classes, dirs, stride, transposed)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (ours(x) - pub(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("stride,transposed", GEOMETRIES)
@pytest.mark.parametrize("dirs", [(2,), (3,), (2, 3)])
@pytest.mark.parametrize("hw", [(6, 10), (9, 5)])
def test_converted_weights_reproduce_published_outputs_non_square_vertical(dirs, stride, transposed, hw):
    pub, ours = _pair(PublishedResSDN, ResidualSDN, dirs, stride, transposed)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert (ours(x) - pub(x)).abs().max().item() <= 1e-5


def test_published_horizontal_sweep_misses_columns_on_wide_inputs():
    """On W > H the published right sweep stops after H columns; spatialrec sweeps every column."""
    pub, ours = _pair(PublishedSDN, SpatialDependencyLayer, (0,), 1, False)
    x = torch.randn(1, 3, 4, 9)
    with torch.no_grad():
        diff = (ours(x) - pub(x)).abs().amax(dim=(0, 1, 2))
    assert diff[:4].max() <= 1e-5  # the columns both sweep agree
    assert diff[4:].min() > 1e-4  # the published code leaves these unswept


def test_conversion_maps_keys_and_shares_tensors():
    pub = PublishedResSDN(3, 4, 5, (0, 2), 3, 1, 1)
    sd = pub.state_dict()
    new = convert_published_state_dict(sd)
    assert set(new) == set(ResidualSDN(3, 4, state_size=5).state_dict())
    assert new["sdn.sweeps.1.weight_ih"] is sd["sdn.sdn_update_network.1.cell.weight_ih"]
    assert new["conv.weight"] is sd["cnn.weight"]


def test_unknown_keys_are_listed():
    sd = PublishedSDN(3, 4, 5, (0, 2), 3, 1, 1).state_dict()
    sd["model.head.weight"] = torch.zeros(1)
    sd["sdn_update_network.0.gru.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"model\.head\.weight.*sdn_update_network\.0\.gru\.weight|sdn_update_network\.0\.gru\.weight.*model\.head\.weight"):
        convert_published_state_dict(sd)


def test_missing_keys_are_listed():
    sd = PublishedSDN(3, 4, 5, (0, 2), 3, 1, 1).state_dict()
    del sd["post_cnn.bias"], sd["sdn_update_network.1.cell.bias_hh"]
    with pytest.raises(KeyError, match=r"missing keys.*project_out\.bias.*sweeps\.1\.bias_hh"):
        convert_published_state_dict(sd)
    res = PublishedResSDN(3, 4, 5, (0,), 3, 1, 1).state_dict()
    del res["cnn.weight"]
    with pytest.raises(KeyError, match=r"missing keys.*conv\.weight"):
        convert_published_state_dict(res)


def test_non_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="mapping"):
        convert_published_state_dict([("pre_cnn.weight", torch.zeros(1))])
