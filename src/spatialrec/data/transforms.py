"""Joint image/mask augmentation with torch only.

Every transform is a callable ``(image (C, H, W), mask (K, H, W)) -> (image, mask)`` on float
tensors; geometric transforms move image and mask together (masks stay exactly 0/1), intensity
transforms touch only the image. Randomness comes from the transform's own ``torch.Generator``
when a ``seed`` is given (reproducible in one process), otherwise from torch's default generator,
which :class:`torch.utils.data.DataLoader` seeds differently in each worker.

Readers apply no augmentation unless a ``transform`` is passed; give one to the training set
only (:func:`~spatialrec.data.make_splits` does that with ``train_transform``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..checks import check_float

__all__ = [
    "Compose",
    "IntensityJitter",
    "RandomAffine",
    "RandomFlip",
    "RandomRot90",
    "default_augmentation",
]


def _check_pair(image: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(f"image and mask must be tensors, got {type(image).__name__} and {type(mask).__name__}")
    if image.dim() != 3 or mask.dim() != 3:
        raise ValueError(f"image must be (C, H, W) and mask (K, H, W), got {tuple(image.shape)} and {tuple(mask.shape)}")
    if image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image and mask sizes differ: {tuple(image.shape)} vs {tuple(mask.shape)}")


class _Random:
    """Base of the random transforms: with probability ``p`` (the first of ``draws`` uniform numbers
    ``u``), ``_apply(image, mask, u)``; otherwise the pair unchanged."""

    draws = 1
    shown: tuple[str, ...] = ("p",)  # the attributes __repr__ lists

    def __init__(self, p: float = 0.5, seed: Optional[int] = None) -> None:
        self.p = check_float("p", p, 0.0, 1.0)
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (C, H, W)``, ``mask (K, H, W)`` -> the same shapes."""
        _check_pair(image, mask)
        u = self._rand(self.draws)
        return self._apply(image, mask, u) if u[0] < self.p else (image, mask)

    def _apply(self, image: torch.Tensor, mask: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{name}={getattr(self, name)}' for name in self.shown)})"


class Compose:
    """Apply transforms in order: ``Compose([RandomFlip(), IntensityJitter()])(image, mask)``."""

    def __init__(self, transforms: Sequence) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"every transform must be callable, got {type(t).__name__}")
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (C, H, W)``, ``mask (K, H, W)`` -> the same shapes."""
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomFlip(_Random):
    """Flip up-down and/or left-right, each with probability ``p``.

    Args:
        p: probability of each flip.
        horizontal, vertical: which flips may happen.
        seed: optional seed of a private generator.
    """

    shown = ("p", "horizontal", "vertical")

    def __init__(
        self, p: float = 0.5, horizontal: bool = True, vertical: bool = True, seed: Optional[int] = None
    ) -> None:
        super().__init__(p, seed)
        self.horizontal, self.vertical = bool(horizontal), bool(vertical)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (C, H, W)``, ``mask (K, H, W)`` -> the same shapes."""
        _check_pair(image, mask)
        u = self._rand(2)
        if self.horizontal and u[0] < self.p:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.vertical and u[1] < self.p:
            image, mask = image.flip(-2), mask.flip(-2)
        return image, mask


class RandomRot90(_Random):
    """Rotate by a multiple of 90 degrees, drawn uniformly; with probability ``p`` (else unchanged).

    Non-square images are only rotated by 0 or 180 degrees, so their size never changes.
    """

    draws = 2

    def _apply(self, image: torch.Tensor, mask: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        square = image.shape[-1] == image.shape[-2]
        k = int(u[1] * 3) + 1 if square else 2  # 1..3 quarter turns
        return torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))


class RandomAffine(_Random):
    """Small random rotation, scaling and translation (bilinear image, nearest mask, zero fill).

    Args:
        p: probability of applying it.
        degrees: rotation drawn from ``[-degrees, degrees]``.
        scale: scale factor range ``(low, high)``.
        translate: shift drawn from ``[-t, t]`` times the image size, per axis.
        seed: optional seed of a private generator.
    """

    draws = 5
    shown = ("p", "degrees", "scale", "translate")

    def __init__(
        self,
        p: float = 0.5,
        degrees: float = 15.0,
        scale: tuple[float, float] = (0.9, 1.1),
        translate: float = 0.05,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(p, seed)
        lo, hi = (float(s) for s in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.degrees, self.scale = check_float("degrees", degrees, 0.0, 180.0), (lo, hi)
        self.translate = check_float("translate", translate, 0.0, 1.0, high_open=True)

    def _apply(self, image: torch.Tensor, mask: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angle = math.radians((2 * float(u[1]) - 1) * self.degrees)
        s = self.scale[0] + float(u[2]) * (self.scale[1] - self.scale[0])
        tx, ty = ((2 * float(u[3]) - 1) * 2 * self.translate, (2 * float(u[4]) - 1) * 2 * self.translate)
        h, w = image.shape[-2:]
        # affine_grid works in [-1, 1] coordinates; the aspect terms keep the rotation a rotation on
        # non-square images. The matrix maps output to input coordinates, hence the inverse scale.
        cos, sin = math.cos(angle) / s, math.sin(angle) / s
        theta = torch.tensor([[cos, -sin * h / w, tx], [sin * w / h, cos, ty]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
        img = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        msk = F.grid_sample(mask[None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        return img.to(image.dtype), msk.to(mask.dtype)


class IntensityJitter(_Random):
    """Random brightness shift, contrast scaling around the image mean, and Gaussian noise.

    ``image' = (image - mean) * c + mean + b + noise`` with ``c`` in ``[1 - contrast, 1 + contrast]``,
    ``b`` in ``[-brightness, brightness]``, noise std drawn from ``[0, noise_std]``. The mask is
    unchanged.
    """

    draws = 4
    shown = ("p", "brightness", "contrast")

    def __init__(
        self,
        p: float = 0.5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        noise_std: float = 0.0,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(p, seed)
        self.brightness = check_float("brightness", brightness, 0.0)
        self.noise_std = check_float("noise_std", noise_std, 0.0)
        self.contrast = check_float("contrast", contrast, 0.0, 1.0, high_open=True)  # it scales by 1 +- contrast

    def _apply(self, image: torch.Tensor, mask: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = 1 + (2 * float(u[1]) - 1) * self.contrast
        b = (2 * float(u[2]) - 1) * self.brightness
        mean = image.mean()
        out = (image - mean) * c + mean + b
        if self.noise_std > 0:
            std = float(u[3]) * self.noise_std
            out = out + std * torch.randn(image.shape, generator=self.generator).to(image.dtype)
        return out, mask


def default_augmentation(seed: Optional[int] = None) -> Compose:
    """Flips, 90-degree rotations, a small affine and intensity jitter, for training sets.

    Args:
        seed: optional seed; each part gets its own generator seeded from it.

    Returns:
        A :class:`Compose` callable on ``(image (C, H, W), mask (K, H, W))``.
    """
    s = (lambda k: None) if seed is None else (lambda k: int(seed) * 4 + k)
    return Compose(
        [
            RandomFlip(0.5, seed=s(0)),
            RandomRot90(0.5, seed=s(1)),
            RandomAffine(0.3, seed=s(2)),
            IntensityJitter(0.5, seed=s(3)),
        ]
    )
