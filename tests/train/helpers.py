"""Tiny data sets, models and losses for the training-loop tests (written for these tests only)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinySegmentation(Dataset):
    """``n`` random images ``(C, size, size)``; the mask of class k is ``image[k % C] > 0.5``.

    With ``flip_p > 0`` items are flipped left-right at random with the *global* torch RNG, like
    a data-augmenting transform would, so that RNG restoring on resume is exercised.
    """

    def __init__(self, n: int, size: int = 12, channels: int = 1, classes: int = 1, seed: int = 0, flip_p: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, channels, size, size, generator=g)
        self.masks = torch.stack([(self.images[:, k % channels] > 0.5).float() for k in range(classes)], dim=1)
        self.flip_p = flip_p
        self.in_channels = channels
        self.num_classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.images[i], self.masks[i]
        if self.flip_p and torch.rand(()) < self.flip_p:
            image, mask = image.flip(-1), mask.flip(-1)
        return {"image": image.clone(), "mask": mask.clone(), "id": f"tiny_{i:03d}"}


def tiny_model(channels: int = 1, classes: int = 1, width: int = 4, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """Conv -> ReLU -> (Dropout2d) -> Conv: no BatchNorm, so data-parallel runs match exactly."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    layers.append(nn.Conv2d(width, classes, 3, padding=1))
    return nn.Sequential(*layers)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over images and classes of ``1 - (2 |p t| + eps) / (|p| + |t| + eps)``, p = sigmoid(logits)."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, p.dim()))
    inter = (p * target).sum(dims)
    total = p.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + eps) / (total + eps)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus binary cross-entropy: escapes the 'everything foreground' plateau of pure Dice."""
    return soft_dice_loss(logits, target) + nn.functional.binary_cross_entropy_with_logits(logits, target)
