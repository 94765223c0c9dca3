"""Tests of random 3D patch sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatialrec.data.patches3d import RandomPatchDataset3d

pytestmark = pytest.mark.usefixtures("one_thread")


def _volume(vid: str, shape=(10, 12, 14), fg_at=((7, 9, 11),), channels: int = 1) -> dict:
    image = torch.arange(channels * shape[0] * shape[1] * shape[2], dtype=torch.float32).reshape(channels, *shape)
    mask = torch.zeros(1, *shape)
    for z, y, x in fg_at:
        mask[0, z, y, x] = 1
    return {"image": image, "mask": mask, "id": vid, "spacing": torch.tensor([2.5, 0.7, 0.7])}


def test_patches_are_crops_of_their_volume() -> None:
    vols = [_volume("a"), _volume("b", shape=(6, 8, 9), fg_at=((5, 1, 8),))]
    ds = RandomPatchDataset3d(vols, (4, 5, 6), samples_per_volume=5, foreground_ratio=0.5, seed=3)
    assert len(ds) == 10 and ds.in_channels == 1 and ds.num_classes == 1
    for i in range(len(ds)):
        item = ds[i]
        vol = vols[i // 5]
        z, y, x = item["origin"].tolist()
        assert item["image"].shape == (1, 4, 5, 6) and item["mask"].shape == (1, 4, 5, 6)
        torch.testing.assert_close(item["image"], vol["image"][:, z : z + 4, y : y + 5, x : x + 6])
        torch.testing.assert_close(item["mask"], vol["mask"][:, z : z + 4, y : y + 5, x : x + 6])
        assert item["id"] == f"{vol['id']}@{z},{y},{x}"
        torch.testing.assert_close(item["spacing"], vol["spacing"])


def test_foreground_oversampling_ratio() -> None:
    vols = [_volume("a", shape=(20, 20, 20), fg_at=((2, 17, 3),))]
    always = RandomPatchDataset3d(vols, 6, samples_per_volume=40, foreground_ratio=1.0)
    assert all(always[i]["mask"].sum() == 1 for i in range(len(always)))
    never = RandomPatchDataset3d(vols, 6, samples_per_volume=200, foreground_ratio=0.0)
    hits = sum(int(never[i]["mask"].sum()) for i in range(len(never)))
    # a uniform 6^3 patch in 20^3 contains a given voxel with probability <= (6/15)^3 ~ 0.064
    assert hits < 40
    half = RandomPatchDataset3d(vols, 6, samples_per_volume=200, foreground_ratio=0.5)
    hits_half = sum(int(half[i]["mask"].sum()) for i in range(len(half)))
    assert 80 <= hits_half <= 140


def test_deterministic_per_seed_and_epoch() -> None:
    vols = [_volume("a")]
    a = RandomPatchDataset3d(vols, 4, samples_per_volume=6, seed=1)
    b = RandomPatchDataset3d(vols, 4, samples_per_volume=6, seed=1)
    origins = [a[i]["origin"].tolist() for i in range(6)]
    assert origins == [b[i]["origin"].tolist() for i in range(6)]
    assert origins == [a[i]["origin"].tolist() for i in reversed(range(6))][::-1]  # order-independent
    a.set_epoch(1)
    assert origins != [a[i]["origin"].tolist() for i in range(6)]
    c = RandomPatchDataset3d(vols, 4, samples_per_volume=6, seed=2)
    assert origins != [c[i]["origin"].tolist() for i in range(6)]


def test_small_volumes_are_padded_centred() -> None:
    vol = _volume("s", shape=(3, 8, 8), fg_at=())
    ds = RandomPatchDataset3d([vol], (6, 4, 4), samples_per_volume=3, pad_value=-1.0)
    item = ds[0]
    assert item["image"].shape == (1, 6, 4, 4)
    # depth 3 padded to 6: one plane before, two after
    assert (item["image"][:, 0] == -1).all() and (item["image"][:, 4:] == -1).all()
    assert (item["image"][:, 1:4] >= 0).all() and item["mask"].sum() == 0


def test_bad_arguments() -> None:
    vols = [_volume("a")]
    with pytest.raises(ValueError, match="empty"):
        RandomPatchDataset3d([], 4)
    with pytest.raises(ValueError, match="patch_size"):
        RandomPatchDataset3d(vols, (4, 4))
    with pytest.raises(ValueError, match="foreground_ratio"):
        RandomPatchDataset3d(vols, 4, foreground_ratio=1.5)
    with pytest.raises(ValueError, match="samples_per_volume"):
        RandomPatchDataset3d(vols, 4, samples_per_volume=0)
    bad = dict(vols[0], mask=torch.zeros(1, 10, 12, 13))
    with pytest.raises(ValueError, match="'a'.*differs"):
        RandomPatchDataset3d([bad], 4)[0]
    flat = dict(vols[0], image=torch.zeros(10, 12, 14))
    with pytest.raises(ValueError, match=r"volume 'a': image must have shape \(C, D, H, W\)"):
        RandomPatchDataset3d([flat], 4)
    with pytest.raises(IndexError):
        RandomPatchDataset3d(vols, 4, samples_per_volume=2)[2]


def test_wrong_types_raise_type_error_and_numpy_ints_are_accepted() -> None:
    vols = [_volume("a")]
    with pytest.raises(TypeError, match="patch_size must be an int, got float 4.0"):
        RandomPatchDataset3d(vols, (4, 4.0, 4))
    with pytest.raises(TypeError, match="patch_size must be an int or three ints"):
        RandomPatchDataset3d(vols, "444")
    with pytest.raises(TypeError, match="samples_per_volume must be an int, got str '2'"):
        RandomPatchDataset3d(vols, 4, samples_per_volume="2")
    with pytest.raises(TypeError, match="seed must be an int, got float 1.0"):
        RandomPatchDataset3d(vols, 4, seed=1.0)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        RandomPatchDataset3d(vols, 4, seed=-1)
    ds = RandomPatchDataset3d(vols, np.int64(4), samples_per_volume=np.int32(2), seed=np.uint8(3))
    assert ds.patch_size == (4, 4, 4) and len(ds) == 2 and type(ds.seed) is int
    with pytest.raises(TypeError, match="epoch must be an int, got bool True"):
        ds.set_epoch(True)
    ds.set_epoch(np.int64(1))
    assert ds.epoch == 1 and type(ds.epoch) is int
