"""2018 Data Science Bowl nuclei (DSB2018) reader."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._io import DatasetError, SegmentationDataset, SizeLike, Transform, read_image, require_dir, require_pillow
from .splits import assign_splits, check_split

__all__ = ["DSB2018"]

_LAYOUT = """\
  Kaggle stage1_train (as downloaded):   <root>/<id>/images/<id>.png
                                         <root>/<id>/masks/<any>.png   (one mask per nucleus)
  preprocessed (UNet++ / SDN repos):     <root>/images/<id>.png
                                         <root>/masks/0/<id>.png       (one merged mask)"""


class DSB2018(SegmentationDataset):
    """DSB2018 nuclei: 2D microscopy images with binary nucleus masks.

    Get the data from Kaggle, competition "data-science-bowl-2018", file ``stage1_train.zip``
    (670 images; unzip it and pass that folder as ``root``). Two layouts are read:

    - Kaggle ``stage1_train``: ``<root>/<id>/images/<id>.png`` (RGBA PNG; alpha is dropped) and
      ``<root>/<id>/masks/*.png``, one PNG per nucleus; the nuclei are merged (pixel > 0 in any
      mask) into one binary mask.
    - preprocessed (as in the UNet++ and published SDN code): ``<root>/images/<id>.png`` and
      ``<root>/masks/0/<id>.png`` (one binary mask, foreground > 0).

    Images are scaled to ``[0, 1]`` (``/255``), RGB (``in_channels=3``) or grey (``grayscale=True``,
    ``in_channels=1``), and resized to ``size`` (default 96 x 96, bilinear; masks nearest).
    The data has no patient grouping, so the split is a seeded random split by image id.

    Args:
        root: data folder (see above).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        layout: ``"auto"`` (detect), ``"kaggle"`` or ``"preprocessed"``.
        size: output ``(H, W)`` or int, None keeps each image's own size; default 96.
        grayscale: convert images to one grey channel.
        val_fraction, test_fraction: fractions of images in validation / test (default 0.1 / 0.2).
        seed: seed of the split.
        transform: optional ``(image, mask) -> (image, mask)`` applied after resizing.

    Items: ``{"image": float32 (3 or 1, H, W), "mask": float32 (1, H, W) 0/1, "id": str}``.
    """

    num_classes = 1

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        layout: str = "auto",
        size: SizeLike = 96,
        grayscale: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(size, transform)
        require_pillow()
        self.root = Path(root)
        self.split = check_split(split)
        require_dir(self.root, "DSB2018 root", _LAYOUT)
        if layout == "auto":
            layout = "preprocessed" if (self.root / "images").is_dir() and (self.root / "masks").is_dir() else "kaggle"
        if layout not in ("kaggle", "preprocessed"):
            raise ValueError(f"layout must be 'auto', 'kaggle' or 'preprocessed', got {layout!r}")
        self.layout = layout
        self.grayscale = bool(grayscale)
        self.in_channels = 1 if self.grayscale else 3
        records = self._scan_kaggle() if layout == "kaggle" else self._scan_preprocessed()
        if not records:
            raise DatasetError(f"DSB2018: no images found in {str(self.root)!r}. Expected layout:\n{_LAYOUT}")
        assignment = assign_splits(records, val_fraction, test_fraction, seed)
        for sample_id in sorted(records):
            if split == "all" or assignment[sample_id] == split:
                self._ids.append(sample_id)
                self._samples.append(records[sample_id])
        self._finish_init("DSB2018", self.root)

    def _scan_kaggle(self) -> dict[str, tuple[Path, list[Path]]]:
        records = {}
        dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dirs:
            raise DatasetError(f"DSB2018: {str(self.root)!r} has no sample folders. Expected layout:\n{_LAYOUT}")
        for d in dirs:
            image = d / "images" / f"{d.name}.png"
            if not image.is_file():
                raise DatasetError(f"DSB2018: sample folder {str(d)!r} has no image {str(image)!r}")
            mask_dir = d / "masks"
            masks = sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []
            if not masks:
                raise DatasetError(f"DSB2018: image {str(image)!r} has no masks: expected PNGs in {str(mask_dir)!r}")
            records[d.name] = (image, masks)
        return records

    def _scan_preprocessed(self) -> dict[str, tuple[Path, list[Path]]]:
        img_dir = require_dir(self.root / "images", "DSB2018 image folder", _LAYOUT)
        mask_dir = require_dir(self.root / "masks" / "0", "DSB2018 mask folder", _LAYOUT)
        images = {p.stem: p for p in sorted(img_dir.glob("*.png"))}
        masks = {p.stem: p for p in sorted(mask_dir.glob("*.png"))}
        for stem in sorted(set(images) - set(masks)):
            raise DatasetError(f"DSB2018: image {str(images[stem])!r} has no mask {str(mask_dir / (stem + '.png'))!r}")
        for stem in sorted(set(masks) - set(images)):
            raise DatasetError(f"DSB2018: mask {str(masks[stem])!r} has no image {str(img_dir / (stem + '.png'))!r}")
        return {stem: (images[stem], [masks[stem]]) for stem in images}

    def _load(self, record: tuple[Path, list[Path]]) -> tuple[np.ndarray, np.ndarray, None]:
        image_path, mask_paths = record
        img = read_image(image_path, "L" if self.grayscale else "RGB").astype(np.float32) / 255.0
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        mask = np.zeros(img.shape[1:], dtype=bool)
        for mp in mask_paths:
            m = read_image(mp)
            if m.ndim == 3:
                m = m[..., :3].max(axis=-1)  # RGB(A) masks: any colour channel marks the nucleus
            if m.shape != mask.shape:
                raise DatasetError(
                    f"DSB2018: mask {str(mp)!r} has size {m.shape} but image {str(image_path)!r} has {mask.shape}"
                )
            mask |= m > 0
        return img, mask[None].astype(np.float32), None
