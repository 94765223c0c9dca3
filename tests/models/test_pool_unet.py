"""The pooling baseline: UNet(bottleneck_context="se") and its registry entry pool_unet."""

from __future__ import annotations

import pytest
import torch

from spatialrec.models import UNet, create_model, list_models
from spatialrec.models.unet import SqueezeExcite


def _grad_at(model: torch.nn.Module, size: tuple[int, int], out_px: tuple[int, int], in_px: tuple[int, int]) -> float:
    """|d logit[out_px] / d input[in_px]| in eval mode (batch norm then mixes no pixels)."""
    model.eval()
    x = torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    model(x)[0, 0, out_px[0], out_px[1]].backward()
    assert x.grad is not None
    return float(x.grad[0, 0, in_px[0], in_px[1]].abs())


def test_registry_entry_and_shapes():
    assert "pool_unet" in list_models()
    m = create_model("pool_unet", in_channels=1, num_classes=2, depth=2, base_width=6)
    assert isinstance(m, UNet) and isinstance(m.bottleneck, SqueezeExcite) and m.bottleneck_context == "se"
    for size in ((16, 16), (37, 50)):
        assert m(torch.randn(2, 1, *size)).shape == (2, 2, *size)
    plain = create_model("unet", in_channels=1, depth=2, base_width=6)
    # The SE block adds 2 C^2 / reduction + C + C / reduction parameters at the C = 24 bottleneck.
    assert sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in plain.parameters()) > 2 * 24 * 6 - 24 * 6
    assert UNet(1, 1, depth=2, base_width=4, bottleneck_context="se", spatial_dims=3)(torch.randn(1, 1, 8, 9, 10)).shape == (1, 1, 8, 9, 10)


@pytest.mark.parametrize("size", [(48, 48), (64, 96)])
def test_far_pixel_reaches_through_the_pooled_path(size):
    torch.manual_seed(0)
    far = (size[0] - 1, size[1] - 1)
    pooled = UNet(1, 1, depth=2, base_width=4, bottleneck_context="se")
    assert _grad_at(pooled, size, (0, 0), far) > 0
    torch.manual_seed(0)
    plain = UNet(1, 1, depth=2, base_width=4)  # the same U-Net without the pooled path cannot see that far
    assert _grad_at(plain, size, (0, 0), far) == 0


def test_squeeze_excite_gates_channels_by_global_means():
    se = SqueezeExcite(4, reduction=2)
    x = torch.randn(3, 4, 6, 5)
    y = se(x)
    gates = y / x
    # One gate per sample and channel, in (0, 1), the same at every pixel.
    assert torch.allclose(gates, gates[..., :1, :1].expand_as(gates), atol=1e-5)
    assert ((gates > 0) & (gates < 1)).all()
    # Moving pixels around does not change the gates: they see statistics, not positions.
    perm = torch.randperm(30)
    xp = x.flatten(2)[..., perm].reshape_as(x)
    assert torch.allclose(se(xp) / xp, gates, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bottleneck_context"):
        UNet(1, 1, depth=2, base_width=4, bottleneck_context="gc")
    with pytest.raises(TypeError, match="reduction"):
        SqueezeExcite(8, reduction=2.0)
    with pytest.raises(ValueError, match="x must be"):
        SqueezeExcite(8)(torch.randn(2, 4, 5, 5))
