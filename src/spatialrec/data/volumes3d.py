"""Whole CT volumes from the LiTS / SegTHOR readers, for 3D training and volume-level evaluation.

The slice readers (:class:`~spatialrec.data.LiTS`, :class:`~spatialrec.data.SegTHOR`) already
find the volumes, split them by patient/volume, clip and scale HU and cache every volume once
as ``(Z, H, W)`` arrays (slices resized to the reader's ``size``). :class:`CTVolumes` reads
those cached arrays back as whole volumes, so the 3D pipeline shares the 2D one's splits,
preprocessing and cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._io import DatasetError, require_nibabel


class CTVolumes(Dataset):
    """The volumes of a CT slice reader's split, one item per volume.

    Args:
        reader: a constructed :class:`~spatialrec.data.LiTS` or :class:`~spatialrec.data.SegTHOR`
            (any split, target and size); its volumes, preprocessing and cache are used.

    Items: ``{"image": float32 (1, Z, H, W), "mask": float32 (K, Z, H, W) 0/1, "id": volume id,
    "spacing": float32 (3,)}``, the spacing in mm along (Z, H, W): the slice spacing from the
    NIfTI header and the in-plane pixel size after the reader's resizing.

    Attributes ``in_channels`` and ``num_classes`` are the reader's.

    Example:
        >>> # skip: needs the LiTS data set in data/lits (see docs/data.md)
        >>> reader = LiTS("data/lits", split="test", size=128)
        >>> vols = CTVolumes(reader)
        >>> vols[0]["image"].shape
        torch.Size([1, 123, 128, 128])
    """

    def __init__(self, reader: Any) -> None:
        for attr in ("volumes", "_cached", "_mask_from_labels", "in_channels", "num_classes"):
            if not hasattr(reader, attr):
                raise TypeError(
                    f"reader must be a CT slice reader such as spatialrec.data.LiTS or SegTHOR "
                    f"(missing {attr!r}), got {type(reader).__name__}"
                )
        self.reader = reader
        self.in_channels = int(reader.in_channels)
        self.num_classes = int(reader.num_classes)
        self.volume_ids = [v.volume_id for v in reader.volumes]

    def __len__(self) -> int:
        return len(self.reader.volumes)

    def _slice_spacing(self, path: Path) -> float:
        nib = require_nibabel()
        try:
            zooms = nib.load(str(path)).header.get_zooms()
        except Exception as e:  # nibabel raises several types for unreadable headers (a missing file too)
            raise DatasetError(f"cannot read the NIfTI header of {str(path)!r}: {e}") from e
        if len(zooms) < 3 or not float(zooms[2]) > 0:
            raise DatasetError(f"{str(path)!r} has no positive slice spacing in its header (zooms {zooms})")
        return float(zooms[2])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} volumes")
        vol = self.reader.volumes[index]
        folder, meta = self.reader._cached(vol)
        try:
            image = np.load(Path(folder) / "image.npy")
            labels = np.load(Path(folder) / "labels.npy")
        except (OSError, ValueError) as e:
            raise DatasetError(f"cached volume in {str(folder)!r} is unreadable ({e}); delete that folder to rebuild it") from e
        mask = self.reader._mask_from_labels(labels)  # (K, Z, H, W)
        row, col = (float(v) for v in meta["spacing"])
        spacing = (self._slice_spacing(Path(vol.image)), row, col)
        return {
            "image": torch.from_numpy(np.asarray(image, dtype=np.float32))[None],
            "mask": torch.from_numpy(np.asarray(mask, dtype=np.float32)),
            "id": vol.volume_id,
            "spacing": torch.tensor(spacing, dtype=torch.float32),
        }


__all__ = ["CTVolumes"]
