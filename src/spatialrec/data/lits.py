"""LiTS (Liver Tumor Segmentation challenge) CT reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ._ct import CTSliceDataset, VolumeRecord
from ._io import DatasetError, SizeLike, Transform, require_dir

__all__ = ["LiTS"]

_LAYOUT = """\
  <root>/**/volume-<n>.nii[.gz]         CT volumes (any sub-folders, e.g. "Training Batch 1")
  <root>/**/segmentation-<n>.nii[.gz]   labels 0 background, 1 liver, 2 tumour"""
_PATTERN = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")
_TARGETS = {"liver": 1, "tumour": 1, "tumor": 1, "both": 2}


class LiTS(CTSliceDataset):
    """LiTS liver / liver-tumour CT, read as axial slices.

    Get the data from the LiTS challenge (https://competitions.codalab.org/competitions/17094,
    also mirrored as the Medical Segmentation Decathlon "Task03_Liver" with other file names, and
    on academic torrents): the 131 training volumes ``volume-<n>.nii`` with
    ``segmentation-<n>.nii`` (0 background, 1 liver, 2 tumour), in any sub-folders of ``root``,
    ``.nii`` or ``.nii.gz``.

    Each volume's slices go to one split (split by volume, never by slice). On first use the
    volumes of the split are preprocessed once into ``cache_dir`` (see the docs); HU values are
    clipped to ``hu_window`` and, with ``scale=True``, mapped linearly to ``[0, 1]``.

    Args:
        root: data folder (see above).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        target: ``"liver"`` (label > 0: liver including tumour; default), ``"tumour"`` (label 2;
            ``"tumor"`` accepted) or ``"both"`` (2 channels: liver, tumour).
        size: output slice ``(H, W)`` or int, None keeps 512 x 512; default 256.
        hu_window: ``(low, high)`` HU clipping window, None for none; default ``(-200, 250)``.
        scale: map the window to ``[0, 1]``.
        slice_filter: ``"all"`` slices (default) or only ``"foreground"`` slices that contain the
            target (liver for "liver" and "both", tumour for "tumour").
        cache_dir: where the preprocessed slices go; default ``$SPATIALREC_CACHE/lits`` or
            ``~/.cache/spatialrec/lits``.
        val_fraction, test_fraction: fractions of volumes in validation / test (default 0.1 / 0.2).
        seed: seed of the split.
        transform: optional ``(image, mask) -> (image, mask)``.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (K, H, W) 0/1, "id": "volume-<n>/slice<z>",
    "spacing": float32 (2,) mm (row, col) after resizing}``, ``K = 1`` (2 for ``"both"``).
    """

    in_channels = 1
    allowed_labels = (0, 1, 2)
    dataset_name = "LiTS"

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        target: str = "liver",
        size: SizeLike = 256,
        hu_window: Optional[Sequence[float]] = (-200.0, 250.0),
        scale: bool = True,
        slice_filter: str = "all",
        cache_dir: Optional[Union[str, Path]] = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {tuple(_TARGETS)}, got {target!r}")
        self.target = "tumour" if target == "tumor" else target
        self.num_classes = _TARGETS[target]
        super().__init__(
            root, split, size, hu_window, scale, slice_filter, cache_dir, val_fraction, test_fraction, seed, transform
        )

    def _scan(self) -> list[VolumeRecord]:
        require_dir(self.root, "LiTS root", _LAYOUT)
        found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
        for p in sorted(self.root.rglob("*.nii*")):
            m = _PATTERN.match(p.name)
            if not m or not p.is_file():
                continue
            kind, n = m.group(1), int(m.group(2))
            if n in found[kind]:
                raise DatasetError(f"LiTS: two files for {kind} {n}: {str(found[kind][n])!r} and {str(p)!r}")
            found[kind][n] = p
        vols, segs = found["volume"], found["segmentation"]
        if not vols and not segs:
            raise DatasetError(f"LiTS: no volume-<n>.nii[.gz] files under {str(self.root)!r}. Expected layout:\n{_LAYOUT}")
        for n in sorted(set(vols) - set(segs)):
            raise DatasetError(f"LiTS: volume {str(vols[n])!r} has no segmentation-{n}.nii[.gz]")
        for n in sorted(set(segs) - set(vols)):
            raise DatasetError(f"LiTS: segmentation {str(segs[n])!r} has no volume-{n}.nii[.gz]")
        return [VolumeRecord(f"volume-{n}", f"volume-{n}", vols[n], segs[n]) for n in sorted(vols)]

    def _wanted_labels(self) -> set[int]:
        return {2} if self.target == "tumour" else {1, 2}

    def _mask_from_labels(self, labels: np.ndarray) -> np.ndarray:
        if self.target == "liver":
            return (labels > 0)[None]
        if self.target == "tumour":
            return (labels == 2)[None]
        return np.stack([labels > 0, labels == 2])
