"""File reading, resizing and the base class shared by the readers (internal)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

logger = logging.getLogger("spatialrec.data")

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
SizeLike = Union[None, int, Sequence[int]]


class DatasetError(ValueError):
    """A data set on disk is not what its reader expects (the message names the file)."""


def require_pillow() -> Any:
    """Import Pillow's Image module or say which extra installs it."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading PNG/TIFF data sets needs Pillow: pip install 'spatialrec[data]'") from e
    return Image


def require_nibabel() -> Any:
    """Import nibabel or say which extra installs it."""
    try:
        import nibabel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading NIfTI data sets needs nibabel: pip install 'spatialrec[data]'") from e
    return nibabel


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Fail with the expected layout when ``path`` is not a directory."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder {str(path)!r} not found. Expected layout:\n{layout}")
    return path


def read_image(path: Path, mode: Optional[str] = None) -> np.ndarray:
    """Read a PNG/TIFF/... with Pillow: ``(H, W)`` or ``(H, W, C)``, optionally converted to ``mode``."""
    image_mod = require_pillow()
    try:
        with image_mod.open(path) as im:
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise
    except Exception as e:  # Pillow raises several types for corrupt files
        raise DatasetError(f"cannot read image file {str(path)!r}: {type(e).__name__}: {e}") from e
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def read_nifti(path: Path, as_float32: bool = False) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume: ``(data (X, Y, Z), voxel size in mm per axis)``.

    ``as_float32`` applies the header's scaling in float32 (half the memory of nibabel's float64
    default, which matters for 512 x 512 x 900 CT volumes); otherwise the stored values are returned.
    """
    nib = require_nibabel()
    try:
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32) if as_float32 else np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except FileNotFoundError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read NIfTI file {str(path)!r}: {type(e).__name__}: {e}") from e
    if data.ndim != 3:
        raise DatasetError(f"NIfTI file {str(path)!r} must hold a 3-D volume, got shape {data.shape}")
    return data, zooms


def size_pair(size: SizeLike, name: str = "size") -> Optional[tuple[int, int]]:
    """Normalise ``None | int | (H, W)``."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise TypeError(f"{name} must be None, an int or (H, W), got {size!r}")
    if isinstance(size, int):
        pair = (size, size)
    else:
        try:
            pair = tuple(int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be None, an int or (H, W), got {size!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be None, a positive int or (H, W) of positive ints, got {size!r}")
    return pair  # type: ignore[return-value]


def resize_pair(
    image: torch.Tensor, mask: torch.Tensor, size: Optional[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``image (C, H, W)`` bilinearly (antialiased) and ``mask (K, H, W)`` by nearest neighbour."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    # Nearest keeps masks exactly 0/1 and classes disjoint.
    msk = F.interpolate(mask[None], size=size, mode="nearest-exact")[0]
    return img, msk


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both fractions in [0, 1) and leaving some training data, else ValueError."""
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)) or not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data, got {val_fraction} + {test_fraction}"
        )


class SegmentationDataset(Dataset):
    """Base of the readers: a list of samples, each loaded, resized and optionally transformed.

    Subclasses fill ``self._samples`` (any records) and ``self._ids`` (one str per sample) and
    implement ``_load(record) -> (image float32 (C, H, W), mask (K, H, W) 0/1, spacing (2,) or None)``.
    """

    in_channels: int = 1
    num_classes: int = 1

    def __init__(self, size: SizeLike, transform: Optional[Transform]) -> None:
        self.size = size_pair(size)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (image, mask) -> (image, mask), got {type(transform).__name__}")
        self.transform = transform
        self._samples: list[Any] = []
        self._ids: list[str] = []

    def _load(self, record: Any) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    @property
    def ids(self) -> list[str]:
        """Sample ids, in index order."""
        return list(self._ids)

    def _finish_init(self, what: str, root: Path) -> None:
        if not self._samples:
            raise DatasetError(f"{what}: the {getattr(self, 'split', '')!s} split of {str(root)!r} is empty")

    def __len__(self) -> int:
        return len(self._samples)

    def verify(self) -> None:
        """Load every sample once, so a bad file fails now (naming it) rather than mid-training."""
        for i in range(len(self)):
            self[i]

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        image_np, mask_np, spacing = self._load(self._samples[int(index)])
        image = torch.from_numpy(np.ascontiguousarray(image_np, dtype=np.float32))
        mask = torch.from_numpy(np.ascontiguousarray(mask_np, dtype=np.float32))
        h0, w0 = image.shape[-2:]
        image, mask = resize_pair(image, mask, self.size)
        h1, w1 = image.shape[-2:]
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        item: dict = {"image": image, "mask": mask, "id": self._ids[int(index)]}
        if spacing is not None:
            # The resize changes the pixel size; the spacing follows so metrics stay in mm.
            sp = np.asarray(spacing, dtype=np.float64) * np.array([h0 / h1, w0 / w1])
            item["spacing"] = torch.tensor(sp, dtype=torch.float32)
        return item
