"""Segmentation losses: soft Dice, Dice + cross-entropy, binary and multi-class cross-entropy.

All losses take raw model outputs (logits) ``(B, C, *spatial)`` with ``*spatial`` = ``(H, W)`` or
``(D, H, W)`` and a target that is either a mask of the same shape or, for ``softmax``, a label
map ``(B, *spatial)`` / ``(B, 1, *spatial)`` of integer class indices (0 = background).

Targets are checked on every call, at the cost of one ``aminmax`` (one host sync): a mask must
hold values in ``[0, 1]`` (0/1, bool, or soft labels such as label smoothing; rounding noise up to
``max(1e-3, 4 eps)`` outside is clipped), a label map integers in ``[0, C - 1]``. Anything else
(a 0/255 mask, -1 "ignore" pixels, inf, NaN) raises ``ValueError`` naming the range found, instead
of a plausible but wrong, even negative, loss.

Activations:

- ``"sigmoid"``: every channel is an independent binary problem (the default of spatialrec's
  models: ``K`` foreground channels, no background channel).
- ``"softmax"``: the channels are mutually exclusive classes, channel 0 is background.
- ``None``: the input is already a probability map in ``[0, 1]`` (soft Dice only).

Reductions: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (documented per function).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DiceCELoss",
    "DiceLoss",
    "bce_loss",
    "ce_loss",
    "dice_ce_loss",
    "soft_dice_loss",
]

_ACTIVATIONS = ("sigmoid", "softmax", None)
_REDUCTIONS = ("mean", "sum", "none")


def _check_options(activation: Optional[str], reduction: str, allowed: tuple = _ACTIVATIONS) -> None:
    if activation not in allowed:
        raise ValueError(f"activation must be one of {allowed}, got {activation!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_args(
    logits: object, activation: Optional[str], reduction: str, smooth: float = 0.0, allowed: tuple = _ACTIVATIONS,
    ce: bool = False,
) -> torch.Tensor:
    """The checks every loss makes on its arguments; returns ``logits``. ``ce``: a cross-entropy term follows."""
    _check_options(activation, reduction, allowed)
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor (B, C, *spatial), got {type(logits).__name__}")
    if logits.dim() not in (4, 5):
        raise ValueError(f"logits must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if ce and activation == "softmax" and logits.shape[1] < 2:
        raise ValueError(f"ce_loss needs C >= 2 channels (background + classes), got {logits.shape[1]}")
    return logits


def _dice_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Sums over many pixels lose too much in half precision (AMP): Dice is computed in float32."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    return x.mean() if reduction == "mean" else x.sum() if reduction == "sum" else x


def _value_range(target: torch.Tensor) -> tuple[float, float]:
    """``(min, max)`` of a non-empty tensor in one reduction and one host sync (nan if any is nan)."""
    lo, hi = torch.aminmax(target.detach())
    lo_f, hi_f = torch.stack((lo.double(), hi.double())).tolist()
    return lo_f, hi_f


def _format(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else repr(v)


def _mask_tolerance(dtype: torch.dtype) -> float:
    """How far outside [0, 1] a mask value may stray through rounding (e.g. a bilinear resize)."""
    return max(1e-3, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0


def _checked_mask(target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``target`` as ``dtype`` after checking its values are in [0, 1] (see the module docstring);
    rounding noise within :func:`_mask_tolerance` of [0, 1] is clipped, so the losses stay non-negative."""
    if target.dtype == torch.bool or target.numel() == 0:
        return target.to(dtype)
    if target.is_complex():
        raise TypeError(f"target must be a real tensor, got {target.dtype}")
    lo, hi = _value_range(target)
    tol = _mask_tolerance(target.dtype)
    if lo != lo or hi != hi:
        raise ValueError("target contains NaN; a mask target must hold values in [0, 1] (0/1 mask or soft labels)")
    if lo < -tol or hi > 1 + tol:
        hint = "; divide 0/255 masks by 255" if hi > 1 + tol else ""
        raise ValueError(
            f"target must hold values in [0, 1] (a 0/1 mask or soft labels), got min {_format(lo)}, "
            f"max {_format(hi)}{hint}"
        )
    out = target.to(dtype)
    if lo < 0 or hi > 1:
        out = out.clamp(0.0, 1.0)
    return out


def _target_as_onehot(logits: torch.Tensor, target: object, activation: Optional[str]) -> torch.Tensor:
    """The target, checked (module docstring), as a float mask shaped like ``logits``; label maps only with softmax."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    spatial = logits.shape[2:]
    b, c = logits.shape[:2]
    is_label_map = (target.dim() == logits.dim() - 1 and target.shape == (b, *spatial)) or (
        target.dim() == logits.dim() and target.shape == (b, 1, *spatial) and c > 1 and activation == "softmax"
    )
    if is_label_map:
        if activation != "softmax":
            raise ValueError(
                f"a label-map target of shape {tuple(target.shape)} needs activation='softmax' "
                f"(got {activation!r}); pass a 0/1 mask of shape {tuple(logits.shape)} instead"
            )
        if target.is_complex():
            raise TypeError(f"a label-map target must hold integer class indices, got dtype {target.dtype}")
        if target.dtype == torch.bool:
            target = target.to(torch.uint8)  # a bool map is classes 0/1 (aminmax has no bool kernel)
        if target.numel():
            lo, hi = _value_range(target)
            if lo != lo or hi != hi:
                raise ValueError("label-map target contains NaN; it must hold integer class indices")
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"label-map target values must be in [0, {c - 1}] for {c} channels, "
                    f"got range [{_format(lo)}, {_format(hi)}]"
                )
            if target.is_floating_point() and not torch.equal(target, target.round()):
                raise ValueError("label-map target must hold integer class indices, got non-integer values")
        labels = target.reshape(b, *spatial).long()
        onehot = F.one_hot(labels, c).movedim(-1, 1)
        return onehot.to(logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have the logits' shape {tuple(logits.shape)} (0/1 mask)"
            + (" or (B, *spatial) integer labels" if activation == "softmax" else "")
            + f", got {tuple(target.shape)}"
        )
    return _checked_mask(target, logits.dtype)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    activation: Optional[str] = "sigmoid",
    smooth: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)``.

    The sums run over the spatial dimensions of each image and channel (and over the batch too
    when ``batch_dice=True``), so an image whose target channel is empty scores
    ``1 - smooth / (sum(p) + smooth)``: predicting nothing there costs nothing.

    Args:
        logits: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` raw outputs (probabilities if
            ``activation=None``).
        target: mask with the shape of ``logits``, values in ``[0, 1]`` (0/1 or soft labels), or
            with ``activation="softmax"`` integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)``
            in ``[0, C - 1]``. Other values raise ``ValueError`` (see the module docstring).
        activation: ``"sigmoid"`` (independent channels), ``"softmax"`` (channel 0 =
            background) or ``None``.
        smooth: added to numerator and denominator (>= 0); keeps empty channels finite.
        include_background: with ``"softmax"``, whether channel 0 counts; ignored otherwise
            (sigmoid channels have no background channel).
        batch_dice: pool the batch into one Dice per channel instead of one per image.
        reduction: ``"mean"`` / ``"sum"`` over the per-(image, channel) losses, or ``"none"``:
            ``(B, C')`` (``(C',)`` with ``batch_dice``), ``C'`` = channels counted.

    Returns:
        The loss (scalar, or per image and channel with ``reduction="none"``).
    """
    logits = _dice_dtype(_check_args(logits, activation, reduction, smooth))
    onehot = _target_as_onehot(logits, target, activation)
    return _soft_dice(logits, onehot, activation, smooth, include_background, batch_dice, reduction)


def _soft_dice(
    logits: torch.Tensor,
    onehot: torch.Tensor,
    activation: Optional[str],
    smooth: float,
    include_background: bool,
    batch_dice: bool,
    reduction: str,
) -> torch.Tensor:
    """:func:`soft_dice_loss` on checked inputs: ``onehot`` float, shaped like ``logits``."""
    probs = logits if activation is None else torch.sigmoid(logits) if activation == "sigmoid" else logits.softmax(1)
    if activation == "softmax" and not include_background:
        if probs.shape[1] < 2:
            raise ValueError("include_background=False needs at least 2 softmax channels")
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = tuple(range(2, logits.dim()))
    if batch_dice:
        dims = (0, *dims)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (denom + smooth).clamp_min(torch.finfo(probs.dtype).tiny)
    return _reduce(1.0 - dice, reduction)


def bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    pos_weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy on logits, each channel an independent binary problem.

    Args:
        logits: ``(B, C, *spatial)`` raw outputs.
        target: mask of the same shape, values in ``[0, 1]`` (0/1 or soft labels); others raise
            ``ValueError``.
        pos_weight: optional ``(C,)`` weight of the positive class per channel.
        reduction: ``"mean"`` / ``"sum"`` over pixels, or ``"none"``: ``(B, C)``, the mean over
            each image's pixels.

    Returns:
        The loss.
    """
    _check_args(logits, "sigmoid", reduction)
    onehot = _target_as_onehot(logits, target, "sigmoid")
    return _bce(logits, onehot, pos_weight, reduction)


def _bce(
    logits: torch.Tensor, onehot: torch.Tensor, pos_weight: Optional[torch.Tensor], reduction: str
) -> torch.Tensor:
    """:func:`bce_loss` on a checked ``onehot`` target shaped like ``logits``."""
    onehot = onehot.to(logits.dtype)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        if pos_weight.shape != (logits.shape[1],):
            raise ValueError(f"pos_weight must have shape ({logits.shape[1]},), got {tuple(pos_weight.shape)}")
        pos_weight = pos_weight.view(-1, *([1] * (logits.dim() - 2)))
    per_pixel = F.binary_cross_entropy_with_logits(logits, onehot, pos_weight=pos_weight, reduction="none")
    if reduction == "none":
        return per_pixel.flatten(2).mean(-1)
    return _reduce(per_pixel, reduction)


def ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class cross-entropy on logits (softmax over channels, channel 0 = background).

    Args:
        logits: ``(B, C, *spatial)`` raw outputs, ``C >= 2``.
        target: integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` in ``[0, C - 1]`` or a
            one-hot mask ``(B, C, *spatial)`` with values in ``[0, 1]`` (the argmax is the class).
        class_weight: optional ``(C,)`` weights, as in :func:`torch.nn.functional.cross_entropy`.
        reduction: ``"mean"`` / ``"sum"`` over pixels (a weighted mean with ``class_weight``,
            like PyTorch), or ``"none"``: ``(B,)``, the mean over each image's pixels.

    Returns:
        The loss.
    """
    _check_args(logits, "softmax", reduction, ce=True)
    onehot = _target_as_onehot(logits, target, "softmax")
    return _ce(logits, onehot, class_weight, reduction)


def _ce(
    logits: torch.Tensor, onehot: torch.Tensor, class_weight: Optional[torch.Tensor], reduction: str
) -> torch.Tensor:
    """:func:`ce_loss` on a checked one-hot ``onehot`` target shaped like ``logits``."""
    if class_weight is not None:
        class_weight = torch.as_tensor(class_weight, dtype=logits.dtype, device=logits.device)
        if class_weight.shape != (logits.shape[1],):
            raise ValueError(f"class_weight must have shape ({logits.shape[1]},), got {tuple(class_weight.shape)}")
    labels = onehot.argmax(1)
    if reduction == "none":
        per_pixel = F.cross_entropy(logits, labels, weight=class_weight, reduction="none")
        return per_pixel.flatten(1).mean(-1)
    return F.cross_entropy(logits, labels, weight=class_weight, reduction=reduction)


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    activation: str = "sigmoid",
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1.0,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """``dice_weight * soft Dice + ce_weight * cross-entropy`` (BCE for sigmoid, CE for softmax).

    Args:
        logits: ``(B, C, *spatial)`` raw outputs.
        target: as for :func:`soft_dice_loss`.
        activation: ``"sigmoid"`` or ``"softmax"``.
        dice_weight, ce_weight: non-negative weights of the two terms.
        smooth, include_background: passed to :func:`soft_dice_loss`.
        reduction: ``"mean"`` / ``"sum"`` over images, or ``"none"``: ``(B,)`` per-image losses
            (the Dice term averaged over channels, the cross-entropy over pixels and channels).

    Returns:
        The loss.
    """
    if dice_weight < 0 or ce_weight < 0:
        raise ValueError(f"dice_weight and ce_weight must be >= 0, got {dice_weight} and {ce_weight}")
    _check_args(logits, activation, reduction, smooth, ("sigmoid", "softmax"), ce=True)
    # The target is checked once (one aminmax) and shared by both terms.
    dice_logits = _dice_dtype(logits)
    onehot = _target_as_onehot(dice_logits, target, activation)
    dice = _soft_dice(dice_logits, onehot, activation, smooth, include_background, False, "none").mean(1)
    if activation == "sigmoid":
        ce = _bce(logits, onehot, None, "none").mean(1)
    else:
        ce = _ce(logits, onehot, None, "none")
    return _reduce(dice_weight * dice + ce_weight * ce, reduction)


class DiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss` (same arguments); ``forward(logits, target)``.

    Example:
        >>> loss = DiceLoss()(torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8)).float())
    """

    def __init__(
        self,
        activation: Optional[str] = "sigmoid",
        smooth: float = 1.0,
        include_background: bool = True,
        batch_dice: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(activation, reduction)
        self.activation, self.smooth, self.reduction = activation, smooth, reduction
        self.include_background, self.batch_dice = include_background, batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits: (B, C, *spatial)``, ``target`` as in :func:`soft_dice_loss`."""
        return soft_dice_loss(
            logits, target, self.activation, self.smooth, self.include_background, self.batch_dice, self.reduction
        )


class DiceCELoss(nn.Module):
    """Module form of :func:`dice_ce_loss` (same arguments); ``forward(logits, target)``."""

    def __init__(
        self,
        activation: str = "sigmoid",
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth: float = 1.0,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(activation, reduction, ("sigmoid", "softmax"))
        self.activation, self.dice_weight, self.ce_weight = activation, dice_weight, ce_weight
        self.smooth, self.include_background, self.reduction = smooth, include_background, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits: (B, C, *spatial)``, ``target`` as in :func:`dice_ce_loss`."""
        return dice_ce_loss(
            logits, target, self.activation, self.dice_weight, self.ce_weight, self.smooth, self.include_background,
            self.reduction,
        )  # fmt: skip
