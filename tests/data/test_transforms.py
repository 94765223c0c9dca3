"""Joint augmentation: geometry moves image and mask together, masks stay 0/1, seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from spatialrec.data import Compose, IntensityJitter, RandomAffine, RandomFlip, RandomRot90, default_augmentation


def _pair(h=12, w=12, k=2):
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(k, h, w, generator=g) > 0.7).float()
    image = torch.cat([mask, mask[:1] * 0.5 + 0.1], 0)  # the image carries the mask: geometry must agree
    return image, mask


@pytest.mark.parametrize(
    "t", [RandomFlip(1.0, seed=0), RandomRot90(1.0, seed=1), RandomAffine(1.0, degrees=20, seed=2)], ids=repr
)
def test_geometry_moves_image_and_mask_together(t):
    image, mask = _pair()
    changed = False
    for _ in range(6):
        out_i, out_m = t(image, mask)
        assert out_i.shape == image.shape and out_m.shape == mask.shape
        assert set(out_m.unique().tolist()) <= {0.0, 1.0}
        if isinstance(t, RandomAffine):
            # nearest for the mask vs bilinear for the image: agree wherever the image is not mid-way
            sure = (out_i[:2] - 0.5).abs() > 0.45
            assert torch.equal(out_m[sure], (out_i[:2] > 0.5).float()[sure])
        else:
            assert torch.equal(out_i[:2], out_m)
        changed |= not torch.equal(out_m, mask)
    assert changed


def test_rot90_keeps_non_square_size():
    image, mask = _pair(8, 12)
    for _ in range(5):
        out_i, out_m = RandomRot90(1.0)(image, mask)
        assert out_i.shape == image.shape and torch.equal(out_i[:2], out_m)


def test_intensity_jitter_leaves_mask_and_seed_reproduces():
    image, mask = _pair()
    out_i, out_m = IntensityJitter(1.0, brightness=0.2, contrast=0.2, noise_std=0.05, seed=3)(image, mask)
    assert torch.equal(out_m, mask) and not torch.equal(out_i, image)
    a = default_augmentation(seed=7)
    b = default_augmentation(seed=7)
    for _ in range(4):
        ia, ma = a(image, mask)
        ib, mb = b(image, mask)
        torch.testing.assert_close(ia, ib)
        torch.testing.assert_close(ma, mb)


def test_bad_arguments():
    with pytest.raises(ValueError, match="p"):
        RandomFlip(1.5)
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="contrast"):
        IntensityJitter(contrast=1.0)
    with pytest.raises(TypeError, match="callable"):
        Compose([RandomFlip(), 3])
    image, mask = _pair()
    with pytest.raises(ValueError, match="sizes differ"):
        RandomFlip()(image, mask[:, :5])
