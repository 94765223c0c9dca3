"""Losses: against MONAI and torch.nn.functional, gradients (gradcheck and sign), bad input."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from spatialrec import losses as L


@pytest.fixture
def monai_losses():
    import monai.losses  # the dev extra installs MONAI: an import error is a broken environment

    return monai.losses


def _data(b=2, c=3, h=7, w=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    target = (torch.rand(b, c, h, w, generator=g) > 0.6).to(dtype)
    return logits, target


@pytest.mark.parametrize("smooth", [1.0, 1e-5])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_soft_dice_sigmoid_matches_monai(monai_losses, smooth, batch_dice):
    logits, target = _data()
    target[0, 1] = 0  # an empty channel
    ours = L.soft_dice_loss(logits, target, "sigmoid", smooth=smooth, batch_dice=batch_dice, reduction="none")
    ref = monai_losses.DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=batch_dice, reduction="none")(
        logits, target
    )
    torch.testing.assert_close(ours, ref.reshape(ours.shape), rtol=1e-5, atol=1e-6)
    mean = L.soft_dice_loss(logits, target, "sigmoid", smooth=smooth, batch_dice=batch_dice)
    torch.testing.assert_close(mean, ref.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include_background", [True, False])
def test_soft_dice_softmax_label_map_matches_monai(monai_losses, include_background):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 5, generator=g)
    labels = torch.randint(0, 4, (2, 6, 5), generator=g)
    ours = L.soft_dice_loss(logits, labels, "softmax", include_background=include_background, reduction="none")
    ref = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, include_background=include_background, smooth_nr=1.0, smooth_dr=1.0,
        reduction="none",
    )(logits, labels[:, None])
    torch.testing.assert_close(ours, ref.reshape(ours.shape), rtol=1e-5, atol=1e-6)
    # the three target forms agree: (B, H, W), (B, 1, H, W), one-hot
    onehot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    for t in (labels[:, None], onehot, labels.float()):
        torch.testing.assert_close(
            L.soft_dice_loss(logits, t, "softmax", include_background=include_background, reduction="none"), ours
        )


def test_soft_dice_3d_and_probabilities():
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(2, 1, 3, 4, 5, generator=g)
    target = (torch.rand(2, 1, 3, 4, 5, generator=g) > 0.5).float()
    inter = (probs * target).sum((2, 3, 4))
    expected = 1 - (2 * inter + 1) / (probs.sum((2, 3, 4)) + target.sum((2, 3, 4)) + 1)
    torch.testing.assert_close(L.soft_dice_loss(probs, target, None, reduction="none"), expected)


def test_reductions_are_consistent():
    logits, target = _data()
    none = L.soft_dice_loss(logits, target, reduction="none")
    assert none.shape == (2, 3)
    torch.testing.assert_close(L.soft_dice_loss(logits, target, reduction="sum"), none.sum())
    torch.testing.assert_close(L.soft_dice_loss(logits, target, reduction="mean"), none.mean())
    bce_none = L.bce_loss(logits, target, reduction="none")
    assert bce_none.shape == (2, 3)
    torch.testing.assert_close(bce_none.mean(), F.binary_cross_entropy_with_logits(logits, target))
    torch.testing.assert_close(
        L.bce_loss(logits, target, reduction="sum"), F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    )
    dce = L.dice_ce_loss(logits, target, reduction="none")
    assert dce.shape == (2,)
    torch.testing.assert_close(L.dice_ce_loss(logits, target, reduction="sum"), dce.sum())


def test_ce_matches_torch():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 4, generator=g)
    labels = torch.randint(0, 3, (2, 5, 4), generator=g)
    w = torch.tensor([0.2, 1.0, 3.0])
    torch.testing.assert_close(L.ce_loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(L.ce_loss(logits, labels, class_weight=w), F.cross_entropy(logits, labels, weight=w))
    per_image = F.cross_entropy(logits, labels, reduction="none").mean((1, 2))
    torch.testing.assert_close(L.ce_loss(logits, labels, reduction="none"), per_image)
    onehot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(L.ce_loss(logits, onehot), F.cross_entropy(logits, labels))


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_dice_ce_matches_monai(monai_losses, activation):
    g = torch.Generator().manual_seed(4)
    # MONAI uses BCE only for one channel (softmax CE for several, even with sigmoid=True).
    logits = torch.randn(2, 1 if activation == "sigmoid" else 3, 6, 6, generator=g)
    if activation == "sigmoid":
        target = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).float()
        ref_loss = monai_losses.DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.7, lambda_ce=0.3)
        ref = ref_loss(logits, target)
    else:
        target = torch.randint(0, 3, (2, 6, 6), generator=g)
        ref_loss = monai_losses.DiceCELoss(
            softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.7, lambda_ce=0.3
        )
        ref = ref_loss(logits, target[:, None])
    ours = L.dice_ce_loss(logits, target, activation, dice_weight=0.7, ce_weight=0.3)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    module = L.DiceCELoss(activation, dice_weight=0.7, ce_weight=0.3)
    torch.testing.assert_close(module(logits, target), ours)


def test_gradcheck_double():
    logits, target = _data(b=1, c=2, h=3, w=4, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: L.soft_dice_loss(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: L.dice_ce_loss(x, target, dice_weight=0.5, ce_weight=2.0), (logits,))
    labels = torch.randint(0, 2, (1, 3, 4))
    assert torch.autograd.gradcheck(lambda x: L.dice_ce_loss(x, labels, "softmax"), (logits,))


@pytest.mark.parametrize(
    "fn", [L.soft_dice_loss, L.bce_loss, lambda x, t: L.dice_ce_loss(x, t)], ids=["dice", "bce", "dice_ce"]
)
def test_gradient_points_towards_target(fn):
    logits, target = _data(b=2, c=1, h=8, w=8)
    logits = torch.zeros_like(logits, requires_grad=True)
    fn(logits, target).backward()
    g = logits.grad
    assert (g[target == 1] < 0).all(), "raising a foreground logit must lower the loss"
    assert (g[target == 0] > 0).all(), "raising a background logit must raise the loss"


def test_dice_loss_near_zero_for_perfect_prediction():
    _, target = _data()
    logits = (target * 2 - 1) * 30.0
    assert L.DiceLoss()(logits, target) < 1e-6
    assert L.DiceLoss()(-logits, target) > 0.9


def test_bad_input():
    logits, target = _data()
    with pytest.raises(ValueError, match="reduction"):
        L.soft_dice_loss(logits, target, reduction="avg")
    with pytest.raises(ValueError, match="activation"):
        L.soft_dice_loss(logits, target, activation="relu")
    with pytest.raises(ValueError, match="shape"):
        L.soft_dice_loss(logits, target[:, :2])
    with pytest.raises(ValueError, match="softmax"):
        L.soft_dice_loss(logits, target[:, 0])  # a label map needs softmax
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        L.soft_dice_loss(logits, torch.full((2, 7, 6), 3), "softmax")
    with pytest.raises(ValueError, match="smooth"):
        L.soft_dice_loss(logits, target, smooth=-1)
    with pytest.raises(TypeError, match="logits"):
        L.soft_dice_loss(logits.numpy(), target)
    with pytest.raises(ValueError, match="C >= 2"):
        L.ce_loss(logits[:, :1], target[:, :1])
    with pytest.raises(ValueError, match="pos_weight"):
        L.bce_loss(logits, target, pos_weight=torch.ones(2))
    with pytest.raises(ValueError, match="weight"):
        L.dice_ce_loss(logits, target, dice_weight=-1)
    with pytest.raises(ValueError, match="integer"):
        L.soft_dice_loss(logits, torch.full((2, 7, 6), 0.5), "softmax")


def test_half_precision_logits_are_summed_in_float32():
    logits, target = _data(b=1, c=1, h=64, w=64)
    ref = L.soft_dice_loss(logits, target)
    out = L.soft_dice_loss(logits.bfloat16(), target.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=5e-3, rtol=0)


# --- target values (issue 16) -------------------------------------------------------------------

_MASK_LOSSES = {
    "soft_dice": lambda x, t: L.soft_dice_loss(x, t),
    "soft_dice_probabilities": lambda x, t: L.soft_dice_loss(torch.sigmoid(x), t, None),
    "dice_ce": lambda x, t: L.dice_ce_loss(x, t),
    "bce": lambda x, t: L.bce_loss(x, t),
    "DiceLoss": lambda x, t: L.DiceLoss()(x, t),
    "DiceCELoss": lambda x, t: L.DiceCELoss()(x, t),
    "ce_onehot": lambda x, t: L.ce_loss(x, t),
    "soft_dice_softmax_onehot": lambda x, t: L.soft_dice_loss(x, t, "softmax"),
}


def _corrupt(target: torch.Tensor, kind: str) -> torch.Tensor:
    t = target.clone()
    if kind == "0-255":  # a 0/255 PNG mask not divided by 255
        return t * 255
    t[1, 1, 2, 2] = {"minus-one": -1.0, "nan": float("nan"), "inf": float("inf")}[kind]
    return t


@pytest.mark.parametrize("name", sorted(_MASK_LOSSES))
@pytest.mark.parametrize(
    "kind, found",
    [("0-255", r"min 0, max 255"), ("minus-one", r"min -1, max 1"), ("nan", "NaN"), ("inf", r"min 0, max inf")],
)
def test_mask_targets_outside_0_1_are_refused(name, kind, found):
    logits, target = _data(c=2)
    with pytest.raises(ValueError, match="target") as info:
        _MASK_LOSSES[name](logits, _corrupt(target, kind))
    assert re.search(found, str(info.value)), str(info.value)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_0_255_masks_are_refused(dtype):
    logits, target = _data(c=1)
    with pytest.raises(ValueError, match=r"\[0, 1\].*min 0, max 255"):
        L.soft_dice_loss(logits, (target * 255).to(dtype))
    with pytest.raises(ValueError, match=r"max 255"):
        L.bce_loss(logits, (target * 255).to(dtype))


def test_valid_targets_are_still_accepted():
    logits, target = _data(c=2)
    # 0/1 masks as float, integer and bool; soft labels in [0, 1] (label smoothing, resized masks)
    ref = L.soft_dice_loss(logits, target)
    torch.testing.assert_close(L.soft_dice_loss(logits, target.long()), ref)
    torch.testing.assert_close(L.soft_dice_loss(logits, target.bool()), ref)
    soft = target * 0.9 + 0.05
    for fn in (L.soft_dice_loss, L.bce_loss, L.dice_ce_loss):
        out = fn(logits, soft)
        assert torch.isfinite(out) and out >= 0
    # the soft labels give the textbook values
    torch.testing.assert_close(L.bce_loss(logits, soft), F.binary_cross_entropy_with_logits(logits, soft))
    # rounding noise just above 1 / below 0 (e.g. a bilinear resize) is tolerated and clipped
    noisy = target.clone()
    noisy[target == 1] = 1.0 + 1e-6
    noisy[target == 0] = -1e-7
    torch.testing.assert_close(L.bce_loss(logits, noisy), L.bce_loss(logits, target))
    assert L.bce_loss(torch.full_like(logits, 50.0), torch.full_like(logits, 1 + 1e-6)) >= 0  # not negative
    # empty batches pass the check
    empty = logits[:0]
    assert L.soft_dice_loss(empty, target[:0], reduction="none").shape == (0, 2)


def test_bool_and_integer_label_maps_are_still_accepted():
    logits = torch.randn(2, 2, 4, 4)
    labels = torch.rand(2, 4, 4) > 0.5
    ref = L.soft_dice_loss(logits, labels.long(), "softmax")
    torch.testing.assert_close(L.soft_dice_loss(logits, labels, "softmax"), ref)
    torch.testing.assert_close(L.ce_loss(logits, labels.to(torch.uint8)), L.ce_loss(logits, labels.long()))


def test_label_map_targets_with_nan_or_out_of_range_are_refused():
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4)).float()
    labels[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        L.soft_dice_loss(logits, labels, "softmax")
    with pytest.raises(ValueError, match=r"\[0, 2\].*\[-1, 2\]"):
        L.ce_loss(logits, torch.randint(0, 3, (2, 4, 4)).index_fill_(1, torch.tensor([0]), -1))
    with pytest.raises(ValueError, match=r"\[0, 2\].*255"):
        L.dice_ce_loss(logits, torch.randint(0, 3, (2, 4, 4)).index_fill_(1, torch.tensor([0]), 255), "softmax")


def test_target_check_is_one_reduction_per_call(monkeypatch):
    calls = []
    real = torch.aminmax

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch, "aminmax", counting)
    logits, target = _data(c=2)
    for fn in (L.soft_dice_loss, L.bce_loss, L.dice_ce_loss):
        calls.clear()
        fn(logits, target)
        assert len(calls) == 1, fn.__name__
    calls.clear()
    L.dice_ce_loss(logits, torch.randint(0, 2, (2, 7, 6)), "softmax")
    assert len(calls) == 1
