"""Segmentation losses: soft Dice, Dice + cross-entropy, binary and multi-class cross-entropy.

All losses take raw model outputs (logits) ``(B, C, *spatial)`` with ``*spatial`` = ``(H, W)`` or
``(D, H, W)`` and a target that is either a 0/1 mask of the same shape or, for ``softmax``, a label
map ``(B, *spatial)`` / ``(B, 1, *spatial)`` of integer class indices (0 = background).

Activations:

- ``"sigmoid"``: every channel is an independent binary problem (the default of spatialrec's
  models: ``K`` foreground channels, no background channel).
- ``"softmax"``: the channels are mutually exclusive classes, channel 0 is background.
- ``None``: the input is already a probability map in ``[0, 1]`` (soft Dice only).

Reductions: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (documented per function).
"""

from __future__ import annotations

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


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_activation(activation: Optional[str], allowed: tuple = _ACTIVATIONS) -> None:
    if activation not in allowed:
        raise ValueError(f"activation must be one of {allowed}, got {activation!r}")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _check_logits(logits: object) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor (B, C, *spatial), got {type(logits).__name__}")
    if logits.dim() not in (4, 5):
        raise ValueError(f"logits must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    return logits


def _target_as_onehot(logits: torch.Tensor, target: object, activation: Optional[str]) -> torch.Tensor:
    """Return the target as a float mask shaped like ``logits``; label maps only with softmax."""
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
        if target.is_floating_point():
            if not torch.equal(target, target.round()):
                raise ValueError("label-map target must hold integer class indices, got non-integer values")
        labels = target.reshape(b, *spatial).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(
                f"label-map target values must be in [0, {c - 1}] for {c} channels, "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        onehot = F.one_hot(labels, c).movedim(-1, 1)
        return onehot.to(logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have the logits' shape {tuple(logits.shape)} (0/1 mask)"
            + (" or (B, *spatial) integer labels" if activation == "softmax" else "")
            + f", got {tuple(target.shape)}"
        )
    return target.to(logits.dtype)


def _probabilities(logits: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    return logits


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
        target: 0/1 mask with the shape of ``logits``, or with ``activation="softmax"`` integer
            labels ``(B, *spatial)`` / ``(B, 1, *spatial)``.
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
    _check_logits(logits)
    _check_activation(activation)
    _check_reduction(reduction)
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # sums over many pixels lose too much in half precision (AMP)
    onehot = _target_as_onehot(logits, target, activation)
    probs = _probabilities(logits, activation)
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
        target: 0/1 mask of the same shape.
        pos_weight: optional ``(C,)`` weight of the positive class per channel.
        reduction: ``"mean"`` / ``"sum"`` over pixels, or ``"none"``: ``(B, C)``, the mean over
            each image's pixels.

    Returns:
        The loss.
    """
    _check_logits(logits)
    _check_reduction(reduction)
    onehot = _target_as_onehot(logits, target, "sigmoid")
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
        target: integer labels ``(B, *spatial)`` / ``(B, 1, *spatial)`` or a one-hot mask
            ``(B, C, *spatial)``.
        class_weight: optional ``(C,)`` weights, as in :func:`torch.nn.functional.cross_entropy`.
        reduction: ``"mean"`` / ``"sum"`` over pixels (a weighted mean with ``class_weight``,
            like PyTorch), or ``"none"``: ``(B,)``, the mean over each image's pixels.

    Returns:
        The loss.
    """
    _check_logits(logits)
    _check_reduction(reduction)
    if logits.shape[1] < 2:
        raise ValueError(f"ce_loss needs C >= 2 channels (background + classes), got {logits.shape[1]}")
    onehot = _target_as_onehot(logits, target, "softmax")
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
    _check_activation(activation, ("sigmoid", "softmax"))
    _check_reduction(reduction)
    if dice_weight < 0 or ce_weight < 0:
        raise ValueError(f"dice_weight and ce_weight must be >= 0, got {dice_weight} and {ce_weight}")
    dice = soft_dice_loss(
        logits, target, activation, smooth=smooth, include_background=include_background, reduction="none"
    ).mean(1)
    if activation == "sigmoid":
        ce = bce_loss(logits, target, reduction="none").mean(1)
    else:
        ce = ce_loss(logits, target, reduction="none")
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
        _check_activation(activation)
        _check_reduction(reduction)
        self.activation = activation
        self.smooth = smooth
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.reduction = reduction

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
        _check_activation(activation, ("sigmoid", "softmax"))
        _check_reduction(reduction)
        self.activation = activation
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.smooth = smooth
        self.include_background = include_background
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits: (B, C, *spatial)``, ``target`` as in :func:`dice_ce_loss`."""
        return dice_ce_loss(
            logits,
            target,
            self.activation,
            self.dice_weight,
            self.ce_weight,
            self.smooth,
            self.include_background,
            self.reduction,
        )
