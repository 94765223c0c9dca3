"""File reading, resizing and the base class shared by the readers (internal)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

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


def _is_debris(path: Path) -> bool:
    """Hidden files and folders, macOS ``__MACOSX`` archive folders and ``._<name>`` resource forks:
    what a zip made on a Mac (or a Finder) adds beside the data; never data itself."""
    return path.name.startswith(".") or path.name == "__MACOSX"


def subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder``, sorted, without hidden ones and macOS ``__MACOSX`` archive debris."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_debris(p))


def data_files(folder: Path, pattern: str) -> list[Path]:
    """The files of ``folder`` matching ``pattern``, sorted, without hidden files and macOS
    ``._<name>`` resource forks (which match ``*.png`` but are not images)."""
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not _is_debris(p))


@contextmanager
def reading(what: str, path: Path) -> Iterator[None]:
    """Re-raise any error but a missing file as ``DatasetError("cannot read <what> <path>: ...")``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as e:  # Pillow and nibabel raise many types for damaged files
        raise DatasetError(f"cannot read {what} {str(path)!r}: {type(e).__name__}: {e}") from e


def read_image(path: Path, mode: Optional[str] = None) -> np.ndarray:
    """Read a PNG/TIFF/... with Pillow: ``(H, W)`` or ``(H, W, C)``, optionally converted to ``mode``."""
    image_mod = require_pillow()
    with reading("image file", path), image_mod.open(path) as im:
        im.load()
        if mode is not None and im.mode != mode:
            im = im.convert(mode)
        arr = np.asarray(im)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def read_nifti(path: Path, as_float32: bool = False) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI volume: ``(data (X, Y, Z), voxel size in mm per axis)``.

    ``as_float32`` applies the header's scaling in float32 (half the memory of nibabel's float64
    default, which matters for 512 x 512 x 900 CT volumes); otherwise the stored values are returned.
    """
    nib = require_nibabel()
    with reading("NIfTI file", path):
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32) if as_float32 else np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim != 3:
        raise DatasetError(f"NIfTI file {str(path)!r} must hold a 3-D volume, got shape {data.shape}")
    return data, zooms


#: Image and label grids may differ by this fraction of the smallest voxel size (at any corner of
#: the volume, in world space) and still count as the same grid: header rounding, not misalignment.
GRID_TOLERANCE_VOXELS = 0.1


@dataclass(frozen=True)
class NiftiGrid:
    """Where a NIfTI volume's voxels lie in world space: ``world = affine @ (i, j, k, 1)`` in mm.

    ``oriented`` is False when the header has neither a qform nor an sform (both codes 0); nibabel
    then makes up an affine from the voxel sizes alone, which says nothing about orientation.
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    oriented: bool

    @property
    def zooms(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def read_nifti_grid(path: Path) -> NiftiGrid:
    """Read a NIfTI file's voxel grid (shape, affine) from its header only."""
    nib = require_nibabel()
    with reading("the NIfTI header of", path):
        img = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=np.float64)
        try:
            oriented = int(img.header["qform_code"]) > 0 or int(img.header["sform_code"]) > 0
        except (KeyError, ValueError):
            oriented = False
        shape = tuple(int(n) for n in img.shape)
    return NiftiGrid(shape[:3], affine, oriented and bool(np.all(np.isfinite(affine))))


def _grid_gap_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest world-space distance between two affines' images of the volume's corner voxels."""
    corners = np.array(np.meshgrid(*[(0, max(n - 1, 0)) for n in shape[:3]], indexing="ij")).reshape(3, -1)
    homog = np.vstack([corners, np.ones((1, corners.shape[1]))])
    return float(np.linalg.norm((a - b)[:3] @ homog, axis=0).max())


def _axcodes(affine: np.ndarray) -> str:
    """Orientation letters such as ``"RAS"`` (``?`` for an axis with no direction)."""
    from nibabel.orientations import aff2axcodes

    return "".join(c or "?" for c in aff2axcodes(affine))


def _describe_grid(grid: NiftiGrid, shape: Sequence[int]) -> str:
    codes = _axcodes(grid.affine) if grid.oriented else "unknown"
    zooms = ", ".join(f"{z:.4g}" for z in grid.zooms)
    origin = ", ".join(f"{o:.4g}" for o in grid.affine[:3, 3])
    return f"shape {tuple(shape)}, voxel size ({zooms}) mm, orientation {codes}, origin ({origin}) mm"


def align_labels_to_image(
    labels: np.ndarray,
    labels_grid: NiftiGrid,
    image_grid: NiftiGrid,
    labels_path: Path,
    image_path: Path,
    what: str,
) -> np.ndarray:
    """Return ``labels`` on the image's voxel grid, or raise DatasetError naming both files.

    Labels whose header puts every voxel where the image's does (within
    :data:`GRID_TOLERANCE_VOXELS` of a voxel) are returned unchanged. Labels stored with other
    axis order or flips, but consistent in world space, are reoriented to the image's axes
    (``nibabel.orientations``) and logged. Anything else (another voxel size, shape, origin or a
    rotation) cannot be fixed by reordering and raises. Without orientation in either header only
    the shapes can be compared; a warning says so.
    """
    image_shape = tuple(image_grid.shape)
    if not (labels_grid.oriented and image_grid.oriented):
        if labels.shape != image_shape:
            raise DatasetError(
                f"{what}: labels {str(labels_path)!r} have shape {labels.shape} but volume {str(image_path)!r} "
                f"has {image_shape}"
            )
        which = labels_path if not labels_grid.oriented else image_path
        logger.warning(
            "%s: %s has no orientation in its header (qform and sform codes 0), so the alignment of labels %s "
            "with volume %s cannot be checked beyond their shape %s",
            what, which, labels_path, image_path, image_shape,
        )
        return labels
    tol = GRID_TOLERANCE_VOXELS * float(image_grid.zooms.min())
    if labels.shape == image_shape and _grid_gap_mm(labels_grid.affine, image_grid.affine, image_shape) <= tol:
        return labels
    from nibabel import orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(labels_grid.affine), nio.io_orientation(image_grid.affine))
    moved = nio.apply_orientation(labels, transform)
    moved_affine = labels_grid.affine @ nio.inv_ornt_aff(transform, labels.shape)
    identity = bool(np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]))
    gap = _grid_gap_mm(moved_affine, image_grid.affine, image_shape) if moved.shape == image_shape else float("nan")
    if gap <= tol:
        logger.info(
            "%s: labels %s are stored with other axes than volume %s (%s vs %s); reoriented to the volume",
            what, labels_path, image_path, _axcodes(labels_grid.affine), _axcodes(image_grid.affine),
        )
        return np.ascontiguousarray(moved)
    differs = []
    if moved.shape != image_shape:
        differs.append("shape")
    moved_grid = NiftiGrid(moved.shape, moved_affine, True)
    if not np.allclose(moved_grid.zooms, image_grid.zooms, rtol=1e-3, atol=1e-4):
        differs.append("voxel size")
    directions = moved_affine[:3, :3] / moved_grid.zooms
    if not np.allclose(directions, image_grid.affine[:3, :3] / image_grid.zooms, atol=1e-3):
        differs.append("orientation")
    if np.linalg.norm(moved_affine[:3, 3] - image_grid.affine[:3, 3]) > tol:
        differs.append("origin")
    gap_text = f"; voxels up to {gap:.3g} mm apart, tolerance {tol:.3g} mm" if gap == gap else ""
    raise DatasetError(
        f"{what}: labels {str(labels_path)!r} and volume {str(image_path)!r} are not on the same voxel grid: they "
        f"differ in {', '.join(differs) or 'position'}{gap_text}"
        + (" (after reordering the labels' axes to the volume's)" if not identity else "")
        + f". Labels: {_describe_grid(labels_grid, labels.shape)}. Volume: {_describe_grid(image_grid, image_shape)}. "
        f"Axis order and flips are reconciled automatically; other differences are not: resample the labels "
        f"onto the volume's grid, or, if you know the labels' header is wrong and their voxels match the "
        f"volume's as stored, pass label_alignment='as_stored'."
    )


def size_pair(size: SizeLike, name: str = "size") -> Optional[tuple[int, int]]:
    """Normalise ``None | int | (H, W)``."""
    if size is None:
        return None
    values = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    try:  # a bool is not iterable, so it fails here too
        pair = tuple(int(v) for v in values)  # type: ignore[union-attr]
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
