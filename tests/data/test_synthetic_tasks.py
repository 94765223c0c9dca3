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
    InsideWhichRegion,
    MinorityKind,
    NearerMarker,
    SameBand,
    SameShapeAsReference,
    SyntheticLongRange,
    make_task,
    task_splits,
)
from spatialrec.data.synthetic import TASK_KINDS, TASK_REGISTRY, list_tasks, task_kind

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
    if isinstance(ds, NearerMarker):
        return dataclasses.replace(layout, bright=1 - layout.bright)  # the markers swap grey levels
    if isinstance(ds, SameBand):
        others = [b for b in range(ds.num_bands) if b != layout.marker_band]
        return dataclasses.replace(layout, marker_band=int(rng.choice(others)))  # the marker moves to another band
    if isinstance(ds, InsideWhichRegion):
        return dataclasses.replace(layout, marked=1 - layout.marked)  # the marker moves to the other region
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
FAR = {
    "cue_any_side": 24.0, "inside_outside": 12.0, "connected_to_marker": 12.0, "same_shape": 20.0, "minority_kind": 15.0,
    "nearer_marker": 12.0, "same_band": 12.0, "inside_which_region": 10.0, "reachable_along_curve": 12.0,
}  # fmt: skip


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


# ---------------------------------------------------------------------------- kinds


def test_registry_kinds():
    assert list(HOLISTIC_TASKS) == list(TASK_REGISTRY) and HOLISTIC_TASKS["same_band"] is SameBand
    assert set(list_tasks("statistic")) == {"cue_any_side", "inside_outside", "same_shape", "minority_kind", "connected_to_marker"}
    assert set(list_tasks("relational")) == {"reachable_along_curve", "nearer_marker", "same_band", "inside_which_region"}
    for name, spec in TASK_REGISTRY.items():
        assert spec.kind in TASK_KINDS and task_kind(name) == spec.kind == type(make_task(name, 1)).kind
    with pytest.raises(ValueError, match="kind"):
        list_tasks("local")
    with pytest.raises(TypeError, match="task name"):
        make_task(3)


def test_wrong_types_raise_type_error():
    for kwargs in ({"num_samples": 2.0}, {"seed": "0"}, {"noise_std": "0.1"}):
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            NearerMarker(**kwargs)
    with pytest.raises(TypeError, match="num_kinds"):
        SyntheticLongRange(4, num_kinds=2.0)


@pytest.mark.parametrize("name", list_tasks("relational"))
def test_relational_flip_keeps_the_histogram(name):
    """The label-flipping change leaves the noiseless image histogram exactly as it was: no global
    statistic of the grey levels can tell the answer."""
    ds = _noiseless(make_task(name, 20, seed=4))
    rng = np.random.default_rng(1)
    for i in range(len(ds)):
        layout = ds.layout(i)
        img0, mask0 = _render(ds, layout)
        img1, mask1 = _render(ds, _swap_cue(ds, layout, rng))
        assert (mask0 != mask1).sum() >= 10, (name, i)
        assert not np.array_equal(img0, img1)
        np.testing.assert_array_equal(np.sort(img0, axis=None), np.sort(img1, axis=None), err_msg=f"{name} {i}")


def _components(binary):
    ndimage = pytest.importorskip("scipy.ndimage")
    labels, n = ndimage.label(binary)
    return [labels == k for k in range(1, n + 1)]


def _fill(m):
    """Fraction of its bounding box a bool mask fills: 1 for a square, about 0.8 for a disc."""
    r, c = np.nonzero(m)
    return m.sum() / ((r.max() - r.min() + 1) * (c.max() - c.min() + 1))


# A global statistic of the noiseless image that decides the label of each statistic task.
STATISTIC = {
    "cue_any_side": lambda img: float(img.mean()),  # the cue stripe's grey level
    "same_shape": lambda img: round(float(_fill(img == 1.0)), 3),  # the bright object's shape
    "minority_kind": lambda img: sum(_fill(m) > 0.99 for m in _components(img > 0)),  # number of squares (a square fills its box)
    "inside_outside": lambda img: int((img == 1.0).sum()),  # the total curve length
    "connected_to_marker": lambda img: round(float(img.sum()), 3),  # the dot's pixels replace a varying mix of curve and background
}


@pytest.mark.parametrize("name", list_tasks("statistic"))
def test_statistic_tasks_change_a_global_statistic_with_the_label(name):
    ds = _noiseless(make_task(name, 20, seed=4))
    rng = np.random.default_rng(1)
    changed = 0
    for i in range(len(ds)):
        layout = ds.layout(i)
        img0, mask0 = _render(ds, layout)
        img1, mask1 = _render(ds, _swap_cue(ds, layout, rng))
        assert (mask0 != mask1).any()
        changed += STATISTIC[name](img0) != STATISTIC[name](img1)
    # inside_outside: where both gaps hide the same number of curve pixels (about one sample in
    # four) the flip keeps the histogram; that is why the task is not counted as relational.
    # connected_to_marker: the dot of the original task replaces a mix of curve and background
    # pixels that differs from curve to curve in 19 samples of these 20 (reachable_along_curve is
    # the version where it never does).
    least = {"inside_outside": 12, "connected_to_marker": 18}.get(name, 20)
    assert changed >= least, (name, changed)


def test_new_relational_tasks_keep_their_geometry():
    ds = _noiseless(NearerMarker(10, seed=0))
    for i in range(10):
        lay = ds.layout(i)
        for cy, cx, r in lay.objects:
            d = [np.hypot(cy - m[0], cx - m[1]) for m in lay.markers]
            assert min(d) >= 12 and abs(d[0] - d[1]) >= 4
    bands = _noiseless(SameBand(10, seed=0))
    assert {bands.layout(i).vertical for i in range(10)} == {False, True}  # both orientations occur
    for i in range(10):
        lay = bands.layout(i)
        assert {o[3] for o in lay.objects} >= {lay.marker_band} and len({o[3] for o in lay.objects}) >= 2
    regions = _noiseless(InsideWhichRegion(5, seed=0))
    for i in range(5):
        lay = regions.layout(i)
        img, mask = _render(regions, lay)
        my, mx = lay.marker_points[lay.marked]
        assert img[int(my), int(mx)] == 1.0 and (img[mask] == 0.7).all()


def test_inside_which_region_places_every_benchmark_sample():
    # Sample 369 of seed 0's training split needed more than 500 placement attempts (the
    # benchmark run crashed there); the draws before it must not change.
    ds = make_task("inside_which_region", 400, "train", 0)
    layout = ds.layout(369)
    assert len(layout.objects) == 2 * ds.objects_per_region
    again = make_task("inside_which_region", 400, "train", 0)
    assert again.layout(368) == ds.layout(368)
