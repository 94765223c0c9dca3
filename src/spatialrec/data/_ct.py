"""Axial-slice datasets over CT volumes with a one-time per-volume cache (internal base)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import options
from ..checks import check_choice
from ..io import atomic_write
from ._io import (
    DatasetError, SegmentationDataset, SizeLike, Transform, align_labels_to_image, logger,
    read_nifti, read_nifti_grid, require_nibabel, resize_pair
)
from .splits import assign_splits, check_split

# 2: labels are aligned to the volume's voxel grid (caches of version 1 may hold misaligned labels).
_CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """The ``cache_dir`` option (:func:`spatialrec.options.get_cache_dir`): set there, else
    ``$SPATIALREC_CACHE``, else ``~/.cache/spatialrec``."""
    return options.get_cache_dir()


@dataclass(frozen=True)
class VolumeRecord:
    """One CT volume: its id, the patient/volume group it splits by, image and label files."""

    volume_id: str
    group: str
    image: Path
    labels: Path


def _check_window(hu_window: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
    if hu_window is None:
        return None
    try:
        lo, hi = (float(v) for v in hu_window)
    except (TypeError, ValueError):
        raise TypeError(f"hu_window must be None or (low, high) in HU, got {hu_window!r}") from None
    if not lo < hi:
        raise ValueError(f"hu_window must have low < high, got {hu_window!r}")
    return lo, hi


class CTSliceDataset(SegmentationDataset):
    """Base of LiTS and SegTHOR: axial slices of NIfTI volumes, split by volume group.

    On first use every volume of the selected split is read once, HU-clipped and scaled,
    resized slice by slice to ``size`` and written to ``cache_dir`` as two memory-mapped arrays
    (image float16 ``(Z, H, W)``, labels uint8 ``(Z, H, W)``) plus a JSON with the pixel spacing
    and which labels each slice holds; later epochs and runs read single slices from there. The
    cache key covers the source files (path, size, mtime), the window, the scaling and the size.

    Slices are taken as ``volume[:, :, z].T`` (rows = the second voxel axis, columns = the first),
    i.e. the usual radiological display of a NIfTI in RAS/LPS orientation, up to flips.

    ``label_alignment``: ``"check"`` (default): compare the image and label headers, reorient
    labels stored with other axis order / flips, refuse other misfits (see the docs);
    ``"as_stored"``: take label voxel (i, j, k) as image voxel (i, j, k), checking only the
    shapes, for labels whose header is known to be wrong.
    """

    allowed_labels: tuple[int, ...] = ()
    dataset_name = "CT"
    #: Per output channel, the label values that are its foreground (set by the subclass before ``__init__``).
    channel_labels: tuple[tuple[int, ...], ...] = ()

    def __init__(
        self,
        root: Union[str, Path],
        split: str,
        size: SizeLike,
        hu_window: Optional[Sequence[float]],
        scale: bool,
        slice_filter: str,
        cache_dir: Optional[Union[str, Path]],
        val_fraction: float,
        test_fraction: float,
        seed: int,
        transform: Optional[Transform],
        label_alignment: str = "check",
    ) -> None:
        super().__init__(size, transform)
        self.num_classes = len(self.channel_labels)
        self.label_alignment = check_choice("label_alignment", label_alignment, ("check", "as_stored"))
        require_nibabel()
        self.root = Path(root)
        self.split = check_split(split)
        self.hu_window = _check_window(hu_window)
        if scale and self.hu_window is None:
            raise ValueError("scale=True maps hu_window to [0, 1] and needs a hu_window; pass scale=False for raw HU")
        self.scale = bool(scale)
        self.slice_filter = check_choice("slice_filter", slice_filter, ("all", "foreground"))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / self.dataset_name.lower()
        volumes = self._scan()  # never empty: the readers raise, naming the expected layout
        assignment = assign_splits((v.group for v in volumes), val_fraction, test_fraction, seed)
        self.volumes = [v for v in volumes if split == "all" or assignment[v.group] == split]
        self.groups = sorted({v.group for v in self.volumes})
        wanted = set().union(*self.channel_labels)  # what makes a slice count for slice_filter="foreground"
        for vol in self.volumes:
            folder, meta = self._cached(vol)
            for z, present in enumerate(meta["labels_per_slice"]):
                if self.slice_filter == "foreground" and not (set(present) & wanted):
                    continue
                self._samples.append((folder, z, tuple(meta["spacing"])))
                self._ids.append(f"{vol.volume_id}/slice{z:04d}")
        self._finish_init(self.dataset_name, self.root)

    # -- subclass hooks ---------------------------------------------------------------------
    def _scan(self) -> list[VolumeRecord]:
        raise NotImplementedError

    def _mask_from_labels(self, labels: np.ndarray) -> np.ndarray:
        """``labels (..., H, W)`` -> ``(K, ..., H, W)`` bool: channel k where the label is in ``channel_labels[k]``."""
        return np.stack([np.isin(labels, values) for values in self.channel_labels])

    # -- cache ------------------------------------------------------------------------------
    def _key(self, vol: VolumeRecord) -> str:
        parts: list[object] = [
            _CACHE_VERSION, self.dataset_name, self.hu_window, self.scale, self.size, self.label_alignment
        ]
        for p in (vol.image, vol.labels):
            st = p.stat()
            parts += [str(p.resolve()), st.st_size, st.st_mtime_ns]
        return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]

    def _cached(self, vol: VolumeRecord) -> tuple[Path, dict]:
        folder = self.cache_dir / f"{vol.volume_id}-{self._key(vol)}"
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            try:
                return folder, json.loads(meta_path.read_text())
            except (OSError, ValueError):
                logger.warning("%s: cache %s is unreadable, rebuilding it", self.dataset_name, folder)
        logger.info("%s: preprocessing %s into %s (once)", self.dataset_name, vol.image, folder)
        image, labels, spacing = self._preprocess(vol)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "source_image": str(vol.image),
            "source_labels": str(vol.labels),
            "spacing": [float(s) for s in spacing],
            "labels_per_slice": [sorted(int(v) for v in np.unique(labels[z])) for z in range(labels.shape[0])],
        }
        for name, arr in (("image.npy", image), ("labels.npy", labels)):
            atomic_write(folder / name, functools.partial(np.save, arr=arr))
        atomic_write(meta_path, lambda f: json.dump(meta, f), mode="w")  # last: it marks the entry complete
        return folder, meta

    def _preprocess(self, vol: VolumeRecord) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        data, zooms = read_nifti(vol.image, as_float32=True)
        lab, _ = read_nifti(vol.labels)
        if self.label_alignment == "check":
            # Labels stored with other axis order / flips are moved onto the volume's grid; other misfits raise.
            lab = align_labels_to_image(
                lab, read_nifti_grid(vol.labels), read_nifti_grid(vol.image), vol.labels, vol.image, self.dataset_name
            )
        elif data.shape != lab.shape:  # "as_stored": voxel (i, j, k) of the labels is voxel (i, j, k) of the volume
            raise DatasetError(
                f"{self.dataset_name}: labels {str(vol.labels)!r} have shape {lab.shape} but volume "
                f"{str(vol.image)!r} has {data.shape}"
            )
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise DatasetError(f"{self.dataset_name}: labels {str(vol.labels)!r} are not integers")
        bad = sorted({int(v) for v in np.unique(lab)} - set(self.allowed_labels))
        if bad:
            raise DatasetError(
                f"{self.dataset_name}: labels {str(vol.labels)!r} contain values {bad}; expected only "
                f"{list(self.allowed_labels)}"
            )
        img = torch.from_numpy(np.asarray(data, dtype=np.float32)).permute(2, 1, 0)  # (Z, rows=Y, cols=X)
        lab_t = torch.from_numpy(np.asarray(lab, dtype=np.uint8)).permute(2, 1, 0)
        if not torch.isfinite(img).all():
            raise DatasetError(f"{self.dataset_name}: volume {str(vol.image)!r} contains NaN or inf voxels")
        if self.hu_window is not None:
            lo, hi = self.hu_window
            img.clamp_(lo, hi)  # in place: the array is ours and a CT volume can be a gigabyte
            if self.scale:
                img.sub_(lo).div_(hi - lo)
        h0, w0 = img.shape[1:]
        spacing = (zooms[1], zooms[0])
        if self.size is not None and (h0, w0) != self.size:
            # 32 slices at a time, as channels: the same per-slice resize as a 2D reader's, bounded memory.
            chunks = [resize_pair(img[z : z + 32], lab_t[z : z + 32].float(), self.size) for z in range(0, img.shape[0], 32)]
            img = torch.cat([c[0] for c in chunks])
            lab_t = torch.cat([c[1] for c in chunks]).round().to(torch.uint8)
            spacing = (spacing[0] * h0 / self.size[0], spacing[1] * w0 / self.size[1])
        image_np = img.numpy().astype(np.float16 if self.scale else np.float32)
        return image_np, np.ascontiguousarray(lab_t.numpy()), spacing

    def _load(self, record: tuple[Path, int, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        folder, z, spacing = record
        try:
            image = np.load(folder / "image.npy", mmap_mode="r")[z]
            labels = np.load(folder / "labels.npy", mmap_mode="r")[z]
        except (OSError, ValueError, IndexError) as e:
            raise DatasetError(
                f"{self.dataset_name}: cached slice {z} in {str(folder)!r} is unreadable ({e}); delete that folder "
                f"to rebuild it"
            ) from e
        mask = self._mask_from_labels(np.asarray(labels))
        return np.array(image, dtype=np.float32)[None], mask.astype(np.float32), np.asarray(spacing)
