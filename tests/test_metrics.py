"""Metrics: hand-computed cases, empty-mask conventions, and MONAI on random masks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from spatialrec import metrics as M


def _masks(*shape):
    return torch.zeros(*shape, dtype=torch.bool), torch.zeros(*shape, dtype=torch.bool)


def test_dice_iou_by_hand():
    p, t = _masks(1, 1, 4, 4)
    p[0, 0, :2, :2] = True  # 4 pixels
    t[0, 0, :2, :3] = True  # 6 pixels, 4 shared
    assert M.dice(p, t).item() == pytest.approx(8 / 10)
    assert M.iou(p, t).item() == pytest.approx(4 / 6)
    assert M.dice(p.float(), t.long()).item() == pytest.approx(0.8)  # 0/1 numbers are accepted


def test_surface_is_boundary_pixels():
    m = torch.zeros(1, 1, 7, 7, dtype=torch.bool)
    m[0, 0, 1:6, 1:6] = True  # 5x5 square: 16 boundary, 9 interior pixels
    (d_pt, d_tp), = M.surface_distances(m, m)[0]
    assert d_pt.numel() == 16 and d_tp.numel() == 16 and float(d_pt.max()) == 0.0
    full = torch.ones(1, 1, 4, 4, dtype=torch.bool)  # outside the image counts as background
    assert M.surface_distances(full, full)[0][0][0].numel() == 12
    cube = torch.zeros(1, 1, 5, 5, 5, dtype=torch.bool)
    cube[0, 0, 1:4, 1:4, 1:4] = True  # 27 voxels, only the centre is interior (6-neighbourhood)
    assert M.surface_distances(cube, cube)[0][0][0].numel() == 26
    plus = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    plus[0, 0, 1:4, 2] = True
    plus[0, 0, 2, 1:4] = True  # the centre has all 4 face neighbours: interior
    assert M.surface_distances(plus, plus)[0][0][0].numel() == 4


def test_hausdorff_single_pixels_with_spacing():
    p, t = _masks(1, 1, 6, 6)
    p[0, 0, 0, 0] = True
    t[0, 0, 3, 4] = True
    assert M.hausdorff_distance(p, t).item() == pytest.approx(5.0)
    assert M.hausdorff_distance(p, t, spacing=(2.0, 1.0)).item() == pytest.approx(math.sqrt(36 + 16))
    assert M.hd95(p, t, spacing=0.5).item() == pytest.approx(2.5)
    assert M.average_surface_distance(p, t, spacing=(2.0, 1.0)).item() == pytest.approx(math.sqrt(52))


def test_parallel_lines():
    p, t = _masks(1, 1, 5, 10)
    p[0, 0, 0, :] = True
    t[0, 0, 3, :] = True
    for fn in (M.hausdorff_distance, M.hd95, M.average_surface_distance):
        assert fn(p, t).item() == pytest.approx(3.0)
        assert fn(p, t, spacing=(0.5, 1.0)).item() == pytest.approx(1.5)


def test_percentile_and_asymmetric_sets():
    p, t = _masks(1, 1, 3, 12)
    p[0, 0, 0, 0] = True
    t[0, 0, 0, 0] = True
    t[0, 0, 0, 10] = True
    # d(P->T) = [0], d(T->P) = [0, 10]
    assert M.hausdorff_distance(p, t).item() == pytest.approx(10.0)
    assert M.hd95(p, t).item() == pytest.approx(9.5)  # linear interpolation between 0 and 10
    assert M.hausdorff_distance(p, t, percentile=50).item() == pytest.approx(5.0)
    assert M.average_surface_distance(p, t).item() == pytest.approx(10 / 3)
    assert M.average_surface_distance(p, t, symmetric=False).item() == pytest.approx(0.0)


def test_3d_by_hand_and_per_image_spacing():
    p, t = _masks(2, 1, 3, 4, 5)
    p[:, 0, 0, 0, 0] = True
    t[:, 0, 2, 3, 4] = True
    sp = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.5, 1.0]])
    out = M.hausdorff_distance(p, t, spacing=sp)
    assert out.shape == (2, 1)
    assert out[0, 0].item() == pytest.approx(math.sqrt(4 + 9 + 16))
    assert out[1, 0].item() == pytest.approx(math.sqrt(16 + 2.25 + 16))


def test_empty_masks():
    p, t = _masks(1, 3, 5, 5)
    p[0, 1, 2, 2] = True  # class 1: only the prediction has foreground
    t[0, 2, 2, 2] = True  # class 2: only the target
    d = M.dice(p, t)
    assert d.tolist() == [[1.0, 0.0, 0.0]]
    assert torch.isnan(M.dice(p, t, ignore_empty=True)[0, :2]).all()
    assert M.dice(p, t, ignore_empty=True)[0, 2] == 0.0
    assert M.iou(p, t).tolist() == [[1.0, 0.0, 0.0]]
    for fn in (M.hausdorff_distance, M.hd95, M.average_surface_distance):
        out = fn(p, t)
        assert torch.isnan(out[0, 0]) and torch.isinf(out[0, 1]) and torch.isinf(out[0, 2])


def test_to_masks():
    logits = torch.tensor([[[[-1.0, 0.5], [2.0, -3.0]]]])
    assert M.to_masks(logits).tolist() == [[[[False, True], [True, False]]]]
    assert M.to_masks(torch.sigmoid(logits), "probabilities", threshold=0.7).tolist() == [[[[False, False], [True, False]]]]
    sm = torch.zeros(1, 3, 1, 3)
    sm[0, 0, 0, 0] = sm[0, 1, 0, 1] = sm[0, 2, 0, 2] = 5.0
    out = M.to_masks(sm, "softmax")
    assert out.shape == (1, 2, 1, 3) and out[0, :, 0].tolist() == [[False, True, False], [False, False, True]]
    assert M.to_masks(sm, "softmax", include_background=True).shape == (1, 3, 1, 3)
    labels = torch.tensor([[[0, 1, 2]]])
    torch.testing.assert_close(M.to_masks(labels, "labels", num_classes=3), out)
    torch.testing.assert_close(M.to_masks(labels[:, None], "labels", num_classes=3), out)
    with pytest.raises(ValueError, match="num_classes"):
        M.to_masks(labels, "labels")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.to_masks(labels, "labels", num_classes=2)
    with pytest.raises(ValueError, match="mode"):
        M.to_masks(labels, "argmax")


def test_bad_input():
    p, t = _masks(1, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        M.dice(p, t[..., :3])
    with pytest.raises(ValueError, match="binary"):
        M.dice(torch.rand(1, 1, 4, 4), t)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        M.iou(p[0], t[0])
    with pytest.raises(TypeError, match="pred"):
        M.dice(p.numpy(), t)
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(p, t, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(p, t, spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="percentile"):
        M.hausdorff_distance(p, t, percentile=101)


# --- MONAI -------------------------------------------------------------------------------------


def _random_masks(shape, seed):
    g = torch.Generator().manual_seed(seed)
    # blobby masks: threshold smoothed noise so surfaces are not all isolated pixels
    x = torch.rand(shape, generator=g)
    nd = len(shape) - 2
    pool = torch.nn.functional.avg_pool2d if nd == 2 else torch.nn.functional.avg_pool3d
    x = pool(x.reshape(-1, 1, *shape[2:]), 3, stride=1, padding=1).reshape(shape)
    return x > x.flatten(2).median(-1).values.view(*shape[:2], *([1] * nd))


@pytest.mark.parametrize("shape", [(3, 2, 24, 19), (2, 2, 7, 9, 8)])
def test_against_monai_random(shape):
    import monai.metrics as monai_metrics  # with scipy (MONAI's surface distances on CPU): dev extra
    p = _random_masks(shape, 1).float()
    t = _random_masks(shape, 2).float()
    nd = len(shape) - 2
    spacing = [0.7, 1.3, 2.0][:nd]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dice = monai_metrics.DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)
        ref_iou = monai_metrics.compute_iou(p, t, include_background=True, ignore_empty=False)
        ref_hd = monai_metrics.compute_hausdorff_distance(p, t, include_background=True, spacing=spacing)
        ref_hd95 = monai_metrics.compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        )
        ref_asd = monai_metrics.compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        )
    torch.testing.assert_close(M.dice(p, t), ref_dice.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(M.iou(p, t), ref_iou.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(M.hausdorff_distance(p, t, spacing=spacing), ref_hd.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(M.hd95(p, t, spacing=spacing), ref_hd95.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(M.average_surface_distance(p, t, spacing=spacing), ref_asd.float(), rtol=1e-4, atol=1e-4)


def test_against_monai_per_image_spacing_and_empty_target():
    import monai.metrics as monai_metrics
    p = _random_masks((2, 1, 16, 16), 3).float()
    t = _random_masks((2, 1, 16, 16), 4).float()
    sp = [[0.8, 1.1], [1.5, 0.6]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = monai_metrics.compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp)
        t_empty = t.clone()
        t_empty[1] = 0
        ref_dice = monai_metrics.DiceMetric(include_background=True, reduction="none")(p, t_empty)
        ref_asd = monai_metrics.compute_average_surface_distance(p, t_empty, include_background=True, symmetric=True)
    torch.testing.assert_close(M.hd95(p, t, spacing=torch.tensor(sp)), ref.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(M.dice(p, t_empty, ignore_empty=True), ref_dice.float(), equal_nan=True)
    torch.testing.assert_close(M.average_surface_distance(p, t_empty), ref_asd.float(), equal_nan=True)


def _naive_surface_points(m):
    """Boundary pixels by explicit neighbour checks (outside = background)."""
    h, w = len(m), len(m[0])
    pts = []
    for i in range(h):
        for j in range(w):
            if not m[i][j]:
                continue
            nbrs = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
            if any(not (0 <= a < h and 0 <= b < w) or not m[a][b] for a, b in nbrs):
                pts.append((i, j))
    return pts


@pytest.mark.parametrize("seed", range(4))
def test_against_naive_loops(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(1, 1, 6, 7, generator=g) > 0.4
    t = torch.rand(1, 1, 6, 7, generator=g) > 0.5
    sp = (1.5, 0.5)
    sp_pts = [[(a * sp[0], b * sp[1]) for a, b in _naive_surface_points(x[0, 0].tolist())] for x in (p, t)]

    def directed(src, dst):
        return [min(math.dist(s, d) for d in dst) for s in src]

    d_pt, d_tp = directed(*sp_pts), directed(*reversed(sp_pts))
    assert M.hausdorff_distance(p, t, spacing=sp).item() == pytest.approx(max(d_pt + d_tp), rel=1e-5)
    assert M.average_surface_distance(p, t, spacing=sp).item() == pytest.approx(
        sum(d_pt + d_tp) / len(d_pt + d_tp), rel=1e-5
    )
    q = lambda d: torch.quantile(torch.tensor(d, dtype=torch.float64), 0.95).item()  # noqa: E731
    assert M.hd95(p, t, spacing=sp).item() == pytest.approx(max(q(d_pt), q(d_tp)), rel=1e-5)


# --- issue 16: spacing type and empty batches ------------------------------------------------------


@pytest.mark.parametrize("spacing", ["abc", b"12", ["a", "b"], object(), {"x": 1.0}, True])
@pytest.mark.parametrize("fn", [M.hausdorff_distance, M.hd95, M.average_surface_distance, M.surface_distances])
def test_spacing_of_the_wrong_type_names_spacing(fn, spacing):
    p, t = _masks(1, 1, 4, 4)
    p[0, 0, 1, 1] = t[0, 0, 2, 2] = True
    with pytest.raises((TypeError, ValueError), match="spacing"):
        fn(p, t, spacing=spacing)


_ALL_METRICS = {
    "dice": M.dice,
    "dice_ignore_empty": lambda p, t: M.dice(p, t, ignore_empty=True),
    "iou": M.iou,
    "hausdorff_distance": M.hausdorff_distance,
    "hd95": M.hd95,
    "hd_percentile": lambda p, t: M.hausdorff_distance(p, t, percentile=50),
    "average_surface_distance": M.average_surface_distance,
    "asd_directed": lambda p, t: M.average_surface_distance(p, t, symmetric=False),
    "hd95_spacing": lambda p, t: M.hd95(p, t, spacing=torch.ones(p.shape[0], p.dim() - 2)),
}


@pytest.mark.parametrize("name", sorted(_ALL_METRICS))
@pytest.mark.parametrize("shape", [(0, 3, 5, 6), (0, 2, 3, 4, 5), (2, 0, 5, 6)])
def test_every_metric_returns_b_by_c_for_empty_batches(name, shape):
    p, t = _masks(*shape)
    out = _ALL_METRICS[name](p, t)
    assert out.shape == shape[:2] and out.dtype == torch.float32
    assert M.surface_distances(p, t) == [[] for _ in range(shape[0])]
