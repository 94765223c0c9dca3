"""SegTHOR (thoracic organs at risk) CT reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Union

from ._ct import CTSliceDataset, VolumeRecord
from ..checks import check_choice
from ._io import DatasetError, SizeLike, Transform, logger, require_dir

__all__ = ["SEGTHOR_ORGANS", "SegTHOR"]

_LAYOUT = """\
  <root>/Patient_<nn>/Patient_<nn>.nii.gz   CT volume
  <root>/Patient_<nn>/GT.nii.gz             labels 0 background, 1 oesophagus, 2 heart, 3 trachea, 4 aorta"""
_PATIENT = re.compile(r"^Patient_(\d+)$")
SEGTHOR_ORGANS = {"oesophagus": 1, "heart": 2, "trachea": 3, "aorta": 4}
_ALIASES = {"esophagus": "oesophagus"}


class SegTHOR(CTSliceDataset):
    """SegTHOR thoracic CT (oesophagus, heart, trachea, aorta), read as axial slices.

    Get the data from the SegTHOR challenge (https://competitions.codalab.org/competitions/21145):
    the 40 training patients, ``Patient_<nn>/Patient_<nn>.nii.gz`` with ``Patient_<nn>/GT.nii.gz``
    (0 background, 1 oesophagus, 2 heart, 3 trachea, 4 aorta); pass the folder holding the
    ``Patient_<nn>`` folders (or its parent, if that has them under ``train/``). Every patient
    folder must have its GT (the challenge's test patients have none and do not belong here).

    Split by patient. HU clipping, scaling and the slice cache as in :class:`LiTS`.

    Args:
        root: data folder (see above).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        organ: ``"aorta"`` (default, as in the paper), ``"oesophagus"`` (``"esophagus"``),
            ``"heart"``, ``"trachea"`` or ``"all"`` (4 channels in label order).
        size: output slice ``(H, W)`` or int, None keeps 512 x 512; default 256. (The published
            SDN code fed 128 x 256 inputs; pass ``size=(128, 256)`` to match it.)
        hu_window: ``(low, high)`` HU clipping window, None for none; default ``(-1000, 1000)``.
        scale: map the window to ``[0, 1]``.
        slice_filter: ``"all"`` (default) or ``"foreground"``: only slices with the organ(s).
        cache_dir: default ``$SPATIALREC_CACHE/segthor`` or ``~/.cache/spatialrec/segthor``.
        val_fraction, test_fraction: fractions of patients in validation / test (default 0.1 / 0.2).
        seed: seed of the split.
        transform: optional ``(image, mask) -> (image, mask)``.
        label_alignment: ``"check"`` (default) or ``"as_stored"``, see :class:`~spatialrec.data._ct.CTSliceDataset`.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (K, H, W) 0/1, "id": "Patient_<nn>/slice<z>",
    "spacing": float32 (2,) mm (row, col) after resizing}``, ``K = 1`` (4 for ``"all"``).
    """

    in_channels = 1
    allowed_labels = (0, 1, 2, 3, 4)
    dataset_name = "SegTHOR"

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        organ: str = "aorta",
        size: SizeLike = 256,
        hu_window: Optional[Sequence[float]] = (-1000.0, 1000.0),
        scale: bool = True,
        slice_filter: str = "all",
        cache_dir: Optional[Union[str, Path]] = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        transform: Optional[Transform] = None,
        label_alignment: str = "check",
    ) -> None:
        organ = _ALIASES.get(check_choice("organ", organ, (*SEGTHOR_ORGANS, *_ALIASES, "all")), organ)
        self.organ = organ
        self.channel_labels = tuple((SEGTHOR_ORGANS[o],) for o in (SEGTHOR_ORGANS if organ == "all" else [organ]))
        super().__init__(
            root, split, size, hu_window, scale, slice_filter, cache_dir, val_fraction, test_fraction, seed, transform,
            label_alignment,
        )  # fmt: skip

    def _scan(self) -> list[VolumeRecord]:
        require_dir(self.root, "SegTHOR root", _LAYOUT)
        patients = sorted(p for p in self.root.iterdir() if p.is_dir() and _PATIENT.match(p.name))
        if not patients and (self.root / "train").is_dir():
            logger.info("SegTHOR: reading patients from %s", self.root / "train")
            patients = sorted(p for p in (self.root / "train").iterdir() if p.is_dir() and _PATIENT.match(p.name))
        if not patients:
            raise DatasetError(f"SegTHOR: no Patient_<nn> folders in {str(self.root)!r}. Expected layout:\n{_LAYOUT}")
        out = []
        for p in patients:
            image = self._one(p, [p / f"{p.name}.nii.gz", p / f"{p.name}.nii"], "CT volume")
            gt = self._one(p, [p / "GT.nii.gz", p / "GT.nii"], "ground truth GT")
            if image is None:
                raise DatasetError(f"SegTHOR: patient folder {str(p)!r} has no CT volume {p.name}.nii.gz (GT: {gt})")
            if gt is None:
                raise DatasetError(f"SegTHOR: volume {str(image)!r} has no ground truth {str(p / 'GT.nii.gz')!r}")
            out.append(VolumeRecord(p.name, p.name, image, gt))
        return out

    @staticmethod
    def _one(folder: Path, candidates: list[Path], what: str) -> Optional[Path]:
        hits = [c for c in candidates if c.is_file()]
        if len(hits) > 1:
            raise DatasetError(f"SegTHOR: {folder} has two {what} files: {[str(h) for h in hits]}")
        return hits[0] if hits else None
