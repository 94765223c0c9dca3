"""TransUNet: shapes, position-embedding interpolation, the Transformer layer against PyTorch's, SDN placement."""

import io

import pytest
import torch
from torch import nn

from spatialrec.blocks import SDNBlock, VGGBlock
from spatialrec.models import TransformerBottleneck, TransUNet, UNet
from spatialrec.models.transunet import TransformerLayer

TINY = dict(base_width=4, state_size=4, transformer_dim=8, transformer_heads=2, transformer_layers=1)


@pytest.mark.parametrize("size", [(16, 16), (20, 28), (13, 30)])
def test_output_shape_any_size(size):
    model = TransUNet(3, 2, depth=2, img_size=(16, 16), **TINY)
    assert model(torch.randn(2, 3, *size)).shape == (2, 2, *size)


def test_position_embeddings_grid_and_interpolation():
    model = TransUNet(1, 1, depth=2, img_size=(20, 28), **TINY)
    assert model.grid_size == (5, 7)
    bott = model.bottleneck
    assert isinstance(bott, TransformerBottleneck) and bott.pos_embed.shape == (1, 8, 5, 7)
    assert bott.position_embedding(5, 7) is bott.pos_embed
    resized = bott.position_embedding(10, 14)
    assert resized.shape == (1, 8, 10, 14)
    # Bilinear resizing interpolates: the values stay within the range of the learned grid.
    assert resized.min() >= bott.pos_embed.min() - 1e-6 and resized.max() <= bott.pos_embed.max() + 1e-6
    assert TransUNet(1, 1, depth=2, img_size=30, **TINY).grid_size == (8, 8)


def test_transformer_layer_matches_torch_encoder_layer():
    torch.manual_seed(0)
    ours = TransformerLayer(16, 4, mlp_ratio=2.0, dropout=0.0, attention_dropout=0.0).eval()
    ref = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()  # fmt: skip
    ref.self_attn.load_state_dict(ours.attn.state_dict())
    ref.norm1.load_state_dict(ours.norm1.state_dict())
    ref.norm2.load_state_dict(ours.norm2.state_dict())
    ref.linear1.load_state_dict(ours.mlp[0].state_dict())
    ref.linear2.load_state_dict(ours.mlp[3].state_dict())
    x = torch.randn(3, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_transformer_sees_every_token():
    # Self-attention on the deepest map: perturbing one corner changes the opposite corner.
    torch.manual_seed(0)
    bott = TransformerBottleneck(4, 8, 1, 2, 2.0, 0.0, 0.0, (4, 4)).eval()
    x = torch.randn(1, 4, 4, 4)
    x2 = x.clone()
    x2[..., 0, 0] += 1.0
    assert not torch.allclose(bott(x)[..., 3, 3], bott(x2)[..., 3, 3])


def test_sdn_placement_and_same_cnn_as_unet():
    model = TransUNet(1, 1, depth=3, decoder_sdn=(1, 2), encoder_sdn=(1,), img_size=16, **TINY)
    assert isinstance(model, UNet)
    assert [type(up.block) for up in model.decoder] == [SDNBlock, SDNBlock, VGGBlock]
    assert isinstance(model.encoder[1], SDNBlock) and model.num_sdn_layers() == 3


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(transformer_dim=10, transformer_heads=4), ValueError, "divisible by transformer_heads=4"),
        (dict(dropout=1.0), ValueError, r"dropout must be in \[0.0, 1.0\)"),
        (dict(attention_dropout=-0.1), ValueError, "attention_dropout"),
        (dict(mlp_ratio=0), ValueError, "mlp_ratio"),
        (dict(transformer_layers=0), ValueError, "transformer_layers must be >= 1"),
        (dict(img_size=(16,)), TypeError, r"img_size must be an int or a tuple of 2 ints, got \(16,\)"),
        (dict(img_size=0), ValueError, "img_size must be >= 1 on every axis, got 0"),
    ],
)
def test_bad_arguments_raise(kwargs, exc, pattern):
    base = dict(depth=2, base_width=4, transformer_dim=8, transformer_heads=2, transformer_layers=1)
    base.update(kwargs)
    with pytest.raises(exc, match=pattern):
        TransUNet(1, 1, **base)


def test_bad_inputs_raise():
    model = TransUNet(2, 1, depth=2, img_size=16, **TINY)
    with pytest.raises(ValueError, match=r"TransUNet input of spatial size \(H, W\)=\(16, 3\)"):
        model(torch.randn(1, 2, 16, 3))
    with pytest.raises(ValueError, match="1 channels, expected in_channels=2"):
        model(torch.randn(1, 1, 16, 16))


def test_gradients_and_state_dict_round_trip():
    torch.manual_seed(0)
    kw = dict(depth=2, img_size=(12, 16), decoder_sdn=(1,), dropout=0.0, **TINY)
    a = TransUNet(1, 1, **kw)
    x = torch.randn(2, 1, 12, 20)  # another width than img_size: exercises the interpolation too
    a(x).square().mean().backward()
    for name, p in a.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    b = TransUNet(1, 1, **kw)
    b.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
