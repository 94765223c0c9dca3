"""The synthetic long-range set: contract, determinism, cue distance, and that locality cannot solve it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spatialrec.data import SyntheticLongRange, synthetic_splits
from spatialrec.metrics import dice


def _min_distance(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = np.argwhere(a).astype(float), np.argwhere(b).astype(float)
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())


def test_contract_and_collation():
    ds = SyntheticLongRange(8, image_size=(40, 56), seed=3)
    item = ds[0]
    assert set(item) == {"image", "mask", "id"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 40, 56)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 40, 56)
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert ds.in_channels == 1 and ds.num_classes == 1 and len(ds) == 8
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 40, 56) and len(batch["id"]) == 4
    assert ds[-1]["id"] == ds[7]["id"]
    with pytest.raises(IndexError):
        ds[8]


def test_deterministic_by_seed_and_splits_disjoint():
    a = SyntheticLongRange(6, seed=5)
    b = SyntheticLongRange(6, seed=5)
    for i in range(6):
        torch.testing.assert_close(a[i]["image"], b[i]["image"])
        torch.testing.assert_close(a[i]["mask"], b[i]["mask"])
    c = SyntheticLongRange(6, seed=6)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    train, val, test = synthetic_splits(20, 20, 20, seed=5)
    assert train.split == "train" and val.split == "val" and test.split == "test"
    torch.testing.assert_close(train[3]["image"], a[3]["image"])  # the train split is the seed's default stream
    imgs = {split.split: torch.stack([split[i]["image"] for i in range(20)]) for split in (train, val, test)}
    for x, y in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not (imgs[x][:, None] == imgs[y][None]).flatten(2).all(-1).any(), f"{x} and {y} share an image"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"cue_position": "random"},
        {"cue_position": "fixed", "cue_border": "left", "image_size": (48, 80)},
        {"cue_position": "random", "num_kinds": 4, "image_size": 48},
        {"cue_position": "random", "num_kinds": 3, "image_size": (64, 40), "cue_width": 5},
    ],
)
def test_cue_is_at_least_half_the_image_from_every_object(kwargs):
    ds = SyntheticLongRange(40, seed=1, **kwargs)
    h, w = ds.image_size
    seen_borders = set()
    for i in range(len(ds)):
        layout = ds.layout(i)
        seen_borders.add(layout.border)
        _, target, kinds = ds.render(layout)
        cue = ds.cue_mask(layout.border)
        extent = h if layout.border in ("top", "bottom") else w
        assert target.any()
        assert _min_distance(cue, target) >= extent / 2
        for m in kinds:  # distractors too, so their position says nothing about the cue
            assert _min_distance(cue, m) >= extent / 2
        assert all(m.any() for m in kinds)
    if kwargs.get("cue_position") == "random":
        assert seen_borders == {"top", "bottom", "left", "right"}
    else:
        assert seen_borders == {kwargs.get("cue_border", "top")}


def test_cue_names_the_target_and_nothing_else_does():
    ds = SyntheticLongRange(200, seed=2, noise_std=0.0)
    counts = np.zeros(ds.num_kinds)
    for i in range(len(ds)):
        layout = ds.layout(i)
        image, target, kinds = ds.render(layout)
        cue = ds.cue_mask(layout.border)
        assert np.allclose(image[cue], ds.levels[layout.target_kind])
        assert np.array_equal(target, kinds[layout.target_kind])
        for k, m in enumerate(kinds):
            assert np.allclose(image[m], ds.levels[k])  # kinds are told apart locally by their grey level
        assert not any(np.logical_and(kinds[a], kinds[b]).any() for a in range(2) for b in range(a + 1, 2))
        counts[layout.target_kind] += 1
        # The same scene with the other kind as target: identical outside the cue, different mask.
        other = dataclasses.replace(layout, target_kind=1 - layout.target_kind)
        image2, target2, _ = ds.render(other)
        assert np.array_equal(image[~cue], image2[~cue]) and not np.array_equal(image[cue], image2[cue])
        assert not (target & target2).any()
    assert 0.4 < counts[0] / counts.sum() < 0.6, "target kinds must be balanced"


def test_local_strategies_stay_below_target_dice():
    """Without the cue the best is to mark every object (Dice ~2/3) or one kind (~1/2)."""
    ds = SyntheticLongRange(200, seed=4)
    union, one_kind, target = [], [], []
    for i in range(len(ds)):
        _, t, kinds = ds.render(ds.layout(i))
        target.append(t)
        union.append(np.logical_or.reduce(kinds))
        one_kind.append(kinds[0])
    t = torch.from_numpy(np.stack(target))[:, None]
    d_union = dice(torch.from_numpy(np.stack(union))[:, None], t).mean().item()
    d_one = dice(torch.from_numpy(np.stack(one_kind))[:, None], t).mean().item()
    assert 0.55 < d_union < 0.75
    assert 0.35 < d_one < 0.65


def test_transform_applied_only_when_given():
    calls = []

    def tf(image, mask):
        calls.append(1)
        return image.flip(-1), mask.flip(-1)

    train, val, _ = synthetic_splits(3, 3, 3, seed=0, train_transform=tf, image_size=32)
    plain = SyntheticLongRange(3, image_size=32, seed=0)
    torch.testing.assert_close(train[0]["image"], plain[0]["image"].flip(-1))
    val[0]
    assert len(calls) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticLongRange(0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticLongRange(4, image_size=16)
    with pytest.raises(ValueError, match="cue_position"):
        SyntheticLongRange(4, cue_position="middle")
    with pytest.raises(ValueError, match="cue_border"):
        SyntheticLongRange(4, cue_border="centre")
    with pytest.raises(ValueError, match="num_kinds"):
        SyntheticLongRange(4, num_kinds=5)
    with pytest.raises(ValueError, match="split"):
        SyntheticLongRange(4, split="dev")
    with pytest.raises(ValueError, match="seed"):
        SyntheticLongRange(4, seed=-1)
    with pytest.raises(TypeError, match="transform"):
        SyntheticLongRange(4, transform=3)
    with pytest.raises(TypeError, match="split"):
        synthetic_splits(2, 2, 2, split="train")
    with pytest.raises(ValueError, match="too small|could not place"):
        SyntheticLongRange(4, image_size=24, num_kinds=4, radius_range=(0.2, 0.2))[0]
