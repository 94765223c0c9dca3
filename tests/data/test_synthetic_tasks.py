"""The long-range benchmark tasks: item contract, determinism, valid labels, and that each label
really hangs on a far-away cue (change only the cue: the label changes far from every changed pixel)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spatialrec.data import (
    HOLISTIC_TASKS,
    ConnectedToMarker,
    InsideOutside,
    MinorityKind,
    SameShapeAsReference,
    SyntheticLongRange,
    make_task,
    task_splits,
)

TASKS = tuple(HOLISTIC_TASKS)


def _render(ds, layout):
    out = ds.render(layout)
    return out[0], out[1]  # SyntheticLongRange.render also returns the per-kind masks


def _noiseless(ds):
    ds.noise_std = 0.0
    return ds


def _swap_cue(ds, layout, rng):
    """The same sample with only its cue changed, such that the label changes."""
    if isinstance(ds, SyntheticLongRange):
        return dataclasses.replace(layout, target_kind=1 - layout.target_kind)
    if isinstance(ds, InsideOutside):
        return dataclasses.replace(layout, closed=(layout.closed + 1) % len(layout.contours))
    if isinstance(ds, ConnectedToMarker):
        return dataclasses.replace(layout, target=(layout.target + 1) % len(layout.curves))
    objs = list(layout.objects)
    if isinstance(ds, SameShapeAsReference):
        other = next(o[3] for o in objs[1:] if o[3] != objs[0][3])
        objs[0] = objs[0][:3] + (other,)  # the reference takes another kind present in the image
        return dataclasses.replace(layout, objects=tuple(objs))
    assert isinstance(ds, MinorityKind)
    counts = np.bincount([o[3] for o in objs], minlength=2)
    major = int(np.argmax(counts))
    k = int(rng.choice([i for i, o in enumerate(objs) if o[3] == major]))
    objs[k] = objs[k][:3] + (1 - major,)  # one object changes kind: the majority flips
    return dataclasses.replace(layout, objects=tuple(objs))


@pytest.mark.parametrize("name", TASKS)
def test_contract_and_labels(name):
    ds = make_task(name, 12, seed=3)
    assert ds.in_channels == 1 and ds.num_classes == 1 and len(ds) == 12
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"image", "mask", "id"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 48, 48)
        assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 48, 48)
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}  # binary, never empty, never everything
        assert torch.isfinite(item["image"]).all()
    assert ds[-1]["id"] == ds[11]["id"] and len({ds[i]["id"] for i in range(12)}) == 12
    with pytest.raises(IndexError):
        ds[12]


@pytest.mark.parametrize("name", TASKS[1:])
def test_other_sizes(name):
    ds = make_task(name, 3, image_size=(56, 72), seed=1)
    assert ds[2]["image"].shape == (1, 56, 72) and ds[2]["mask"].sum() > 0


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_by_seed_and_splits_differ(name):
    a, b, c = make_task(name, 4, seed=5), make_task(name, 4, seed=5), make_task(name, 4, seed=6)
    for i in range(4):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])
    assert not torch.equal(a[0]["image"], c[0]["image"])
    train, val, test = task_splits(name, 4, 4, 4, seed=5)
    assert torch.equal(train[1]["image"], a[1]["image"])
    assert not torch.equal(train[0]["image"], val[0]["image"]) and not torch.equal(val[0]["image"], test[0]["image"])


def _far_label_change(ds, index, rng):
    """Max distance from a pixel whose label changes to the nearest pixel whose image changes."""
    layout = ds.layout(index)
    img0, mask0 = _render(ds, layout)
    img1, mask1 = _render(ds, _swap_cue(ds, layout, rng))
    changed_img, changed_mask = np.argwhere(img0 != img1), np.argwhere(mask0 != mask1)
    assert len(changed_img) and len(changed_mask), "the cue swap changed nothing"
    d = np.sqrt(((changed_mask[:, None].astype(float) - changed_img[None]) ** 2).sum(-1)).min(1)
    return float(d.max())


# Minimal distance (pixels, 48 x 48 images) over 20 samples at which the label still changes when
# only the cue changes: well beyond the few pixels a 3x3 convolution or two can see.
FAR = {"cue_any_side": 24.0, "inside_outside": 12.0, "connected_to_marker": 12.0, "same_shape": 20.0, "minority_kind": 15.0}


@pytest.mark.parametrize("name", TASKS)
def test_label_depends_on_far_away_cue(name):
    ds = _noiseless(make_task(name, 20, seed=2))
    rng = np.random.default_rng(0)
    far = [_far_label_change(ds, i, rng) for i in range(len(ds))]
    assert min(far) >= FAR[name], (name, far)
    assert np.mean(far) >= 1.5 * FAR[name], (name, np.mean(far))


def test_minority_and_same_shape_labels_follow_the_rule():
    ds = _noiseless(MinorityKind(10, seed=0))
    for i in range(10):
        layout = ds.layout(i)
        kinds = [o[3] for o in layout.objects]
        assert sorted(np.bincount(kinds, minlength=2).tolist()) == [2, 3]
    ds2 = _noiseless(SameShapeAsReference(10, seed=0))
    for i in range(10):
        layout = ds2.layout(i)
        ref = layout.objects[0]
        for o in layout.objects[1:]:  # the reference keeps its distance from every other object
            assert np.hypot(o[0] - ref[0], o[1] - ref[1]) >= 0.3 * 48
        img, mask = _render(ds2, layout)
        assert not mask[int(round(ref[0])), int(round(ref[1]))]  # the reference itself is never a target
        assert (img[mask] == 0.6).all()


def test_connected_mask_is_one_of_the_curves_and_touches_the_marker():
    ds = _noiseless(ConnectedToMarker(10, seed=0))
    for i in range(10):
        layout = ds.layout(i)
        img, mask = _render(ds, layout)
        p0 = layout.curves[layout.target][0]
        assert mask[int(round(p0[0])), int(round(p0[1]))]
        assert (img[mask] > 0).all()
        p2 = layout.curves[layout.target][2]
        assert np.hypot(p0[0] - p2[0], p0[1] - p2[1]) >= 0.7 * 48


def test_inside_outside_mask_is_enclosed_by_the_closed_curve():
    ds = _noiseless(InsideOutside(10, seed=0))
    for i in range(10):
        layout = ds.layout(i)
        _, mask = _render(ds, layout)
        cy, cx = layout.contours[layout.closed][:2]
        assert mask[int(round(cy)), int(round(cx))]
        assert not mask[0].any() or not mask[-1].any()  # a region, not a band across the image


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (InsideOutside, {"num_open": -1}),
        (InsideOutside, {"gap": 0}),
        (InsideOutside, {"radius_range": (0.3, 0.2)}),
        (ConnectedToMarker, {"num_curves": 0}),
        (ConnectedToMarker, {"min_length": 2.0}),
        (SameShapeAsReference, {"num_objects": 1}),
        (SameShapeAsReference, {"num_kinds": 5}),
        (MinorityKind, {"num_objects": 4}),
        (MinorityKind, {"image_size": 16}),
        (MinorityKind, {"split": "dev"}),
        (MinorityKind, {"seed": -1}),
        (MinorityKind, {"noise_std": -0.1}),
    ],
)
def test_bad_arguments(factory, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        factory(4, **kwargs)


def test_make_task_errors_and_impossible_layouts():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
    with pytest.raises(TypeError, match="split"):
        task_splits("same_shape", split="train")
    with pytest.raises(ValueError, match="could not place"):
        MinorityKind(1, image_size=24, num_objects=15, radius_range=(0.18, 0.2))[0]
