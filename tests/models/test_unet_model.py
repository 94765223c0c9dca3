"""UNet: shapes for any size, padding/cropping, the published flag mapping, errors, round trip."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from spatialrec.blocks import ResidualSDNBlock, SDNBlock, VGGBlock
from spatialrec.models import UNet, published_unet_levels
from spatialrec.models.common import pad_to_multiple

TINY = dict(base_width=4, state_size=4)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("size", [(16, 16), (20, 28), (19, 23), (8, 31)])
@pytest.mark.parametrize("upsample", ["interpolate", "transposed"])
def test_output_shape_any_size(depth, size, upsample):
    model = UNet(2, 3, depth=depth, upsample=upsample, **TINY)
    y = model(torch.randn(2, 2, *size))
    assert y.shape == (2, 3, *size)
    assert y.dtype == torch.float32


def test_crop_matches_explicitly_padded_input():
    # The logits of an odd-sized image are the window of the logits of its padded version.
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, encoder_sdn=(1,), **TINY).eval()
    x = torch.randn(1, 1, 13, 10)
    padded, ((top, h), (left, w)) = pad_to_multiple(x, 4, "reflect")
    assert padded.shape[-2:] == (16, 12) and (top, left) == (1, 1)
    torch.testing.assert_close(padded[..., 1:14, 1:11], x)
    full = model(padded)
    torch.testing.assert_close(model(x), full[..., top : top + h, left : left + w])


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate", "constant"])
def test_pad_modes_at_minimum_size(pad_mode):
    model = UNet(1, 1, depth=3, pad_mode=pad_mode, **TINY)
    assert model(torch.randn(1, 1, 8, 15)).shape == (1, 1, 8, 15)


def test_too_small_and_wrong_inputs_raise():
    model = UNet(3, 1, depth=3, **TINY)
    with pytest.raises(ValueError, match=r"\(H, W\)=\(7, 20\).*depth=3.*>= 2\*\*depth = 8"):
        model(torch.randn(1, 3, 7, 20))
    with pytest.raises(ValueError, match="2 channels, expected in_channels=3"):
        model(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1.0]])


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(depth=0), ValueError, "depth must be >= 1"),
        (dict(base_width=0), ValueError, "base_width must be >= 1"),
        (dict(depth=2.0), TypeError, "depth must be an int"),
        (dict(sdn_block="gru"), ValueError, "sdn_block='gru'"),
        (dict(encoder_sdn=(5,)), ValueError, "encoder_sdn contains level 5; valid levels are 0..4"),
        (dict(decoder_sdn=(4,)), ValueError, "decoder_sdn contains level 4; valid levels are 0..3"),
        (dict(encoder_sdn=2), TypeError, "encoder_sdn must be"),
        (dict(encoder_sdn="some"), ValueError, "encoder_sdn='some'"),
        (dict(pad_mode="wrap"), ValueError, "pad_mode='wrap'"),
        (dict(upsample="bilinear"), ValueError, "upsample='bilinear' is not valid"),
        (dict(upsample=True), TypeError, "upsample must be a string"),
        (dict(state_size=0), ValueError, "state_size must be >= 1"),
        (dict(directions="right"), TypeError, "directions must be a sequence"),
        (dict(directions=("sideways",)), ValueError, "sideways"),
        (dict(backend="magic"), ValueError, "backend"),
    ],
)
def test_bad_arguments_raise(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        UNet(3, 1, **kwargs)


def test_bad_channel_arguments_raise():
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        UNet(0, 1)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        UNet(1, 0)


def test_widths_and_structure_follow_design():
    model = UNet(3, 2, depth=4, base_width=32)
    assert model.widths == (32, 64, 128, 256, 512)
    assert [b.out_channels for b in model.encoder] == [32, 64, 128, 256, 512]
    assert [b.in_channels for b in model.encoder] == [3, 32, 64, 128, 256]
    # decoder[i] is the published up stage i: from the deepest level upwards.
    assert [up.block.out_channels for up in model.decoder] == [256, 128, 64, 32]
    assert [up.block.in_channels for up in model.decoder] == [512, 256, 128, 64]
    up = model.decoder[0].upsample
    assert isinstance(up[0], nn.Upsample) and up[0].align_corners and isinstance(up[1], nn.Conv2d)
    assert up[1].out_channels == 256 and up[1].kernel_size == (1, 1)
    tconv = UNet(3, 2, depth=4, upsample="transposed").decoder[0].upsample
    assert isinstance(tconv, nn.ConvTranspose2d) and tconv.stride == (2, 2) and tconv.out_channels == 256
    assert model.head.out_channels == 2 and model.num_sdn_layers() == 0


def _published_rule(n_layers, sdn_b_enc, sdn_b_dec, sdn_n_layers):
    """The published script's loops, transcribed: which down/up stages get '_sdn' blocks."""
    down = [sdn_b_enc is True and i <= sdn_n_layers for i in range(n_layers)]
    up = [sdn_b_dec is True and i <= sdn_n_layers for i in range(n_layers)]
    return down, up


@pytest.mark.parametrize(
    "n_layers, sdn_b_enc, sdn_b_dec, sdn_n_layers",
    [(5, False, False, 3), (5, True, False, 3), (5, False, True, 3), (4, True, True, 3), (3, True, True, 0),
     (4, True, False, 1), (2, False, True, 5), (5, True, True, -1)],
)  # fmt: skip
def test_published_flags_place_sdn_per_stage(n_layers, sdn_b_enc, sdn_b_dec, sdn_n_layers):
    model = UNet.from_published_args(3, 1, n_layers=n_layers, feat_start=2, bilinear=True, block="vgg",
                                     sdn_b_enc=sdn_b_enc, sdn_b_dec=sdn_b_dec, sdn_n_layers=sdn_n_layers,
                                     state_size=4)  # fmt: skip
    down, up = _published_rule(n_layers, sdn_b_enc, sdn_b_dec, sdn_n_layers)
    assert isinstance(model.encoder[0], VGGBlock)  # the stem: return_block(block) with block='vgg'
    for i, sdn in enumerate(down):  # down stage i -> encoder level i + 1
        assert isinstance(model.encoder[i + 1], SDNBlock if sdn else VGGBlock), (i, sdn)
    for i, sdn in enumerate(up):  # up stage i (from the deepest) -> decoder[i]
        assert isinstance(model.decoder[i].block, SDNBlock if sdn else VGGBlock), (i, sdn)
    assert model.num_sdn_layers() == sum(down) + sum(up)
    assert model.widths[0] == 2 and model.depth == n_layers


@pytest.mark.parametrize("block, cls", [("vgg_sdn", SDNBlock), ("vggres_sdn", ResidualSDNBlock)])
def test_published_sdn_block_everywhere(block, cls):
    model = UNet.from_published_args(1, 2, n_layers=2, feat_start=2, block=block, bilinear=False, state_size=4)
    assert all(isinstance(b, cls) for b in model.encoder)
    assert all(isinstance(up.block, cls) for up in model.decoder)
    assert model.num_sdn_layers() == 5 and model.upsample == "transposed"


def test_published_flags_errors():
    with pytest.raises(ValueError, match="vgg_sdn_sdn"):
        published_unet_levels(4, "vgg_sdn", True, False, 3)
    with pytest.raises(ValueError, match="block='vgg_block'"):
        published_unet_levels(4, "vgg_block", False, False, 3)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        published_unet_levels(0, "vgg", False, False, 3)


def test_published_flags_accept_numpy_integers():
    # argparse-free callers often hold the published flags in NumPy arrays
    assert published_unet_levels(np.int64(4), "vgg", True, False, np.int32(1)) == published_unet_levels(4, "vgg", True, False, 1)
    model = UNet.from_published_args(1, 1, n_layers=np.int64(2), feat_start=2, bilinear=True, block="vgg",
                                     sdn_b_enc=True, sdn_b_dec=False, sdn_n_layers=np.int64(0), state_size=np.int64(4))  # fmt: skip
    assert model.num_sdn_layers() == 1 and model.depth == 2
    with pytest.raises(TypeError, match="sdn_n_layers must be an int, got float 1.0"):
        published_unet_levels(4, "vgg", True, False, 1.0)


def test_published_default_sdn_unet_levels():
    enc, dec, kind = published_unet_levels(4, "vgg", True, False, 3)
    assert enc == {1, 2, 3, 4} and dec == frozenset() and kind == "sdn"
    enc, dec, _ = published_unet_levels(5, "vgg", True, True, 1)
    assert enc == {1, 2} and dec == {4, 3}


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet(2, 2, depth=2, upsample="transposed", encoder_sdn="all", decoder_sdn=(0,), sdn_block="residual_sdn", **TINY)
    model(torch.randn(2, 2, 11, 14)).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = UNet(1, 2, depth=2, encoder_sdn=(1,), decoder_sdn=(1,), **TINY)
    x = torch.randn(2, 1, 12, 12)
    a(x)  # updates the BN running statistics, so they must round-trip too
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    torch.manual_seed(1)
    b = UNet(1, 2, depth=2, encoder_sdn=(1,), decoder_sdn=(1,), **TINY)
    assert not torch.allclose(a.eval()(x), b.eval()(x))
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(a(x), b(x))
