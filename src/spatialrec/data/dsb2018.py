"""2018 Data Science Bowl nuclei (DSB2018) reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..checks import check_choice
from ..io import atomic_write
from ._io import (
    DatasetError, SegmentationDataset, SizeLike, Transform, data_files, logger, read_image, require_dir,
    require_pillow, subfolders
)
from .splits import assign_splits, check_split

__all__ = ["DSB2018"]

_LAYOUT = """\
  Kaggle stage1_train (as downloaded):   <root>/<id>/images/<id>.png
                                         <root>/<id>/masks/<any>.png   (one mask per nucleus)
  preprocessed (UNet++ / SDN repos):     <root>/images/<id>.png
                                         <root>/masks/0/<id>.png       (one merged mask)
  <root> may also be the unzipped competition folder (holding stage1_train/) or a folder
  holding stage1_train/stage1_train/: the sample folders are looked for up to two levels down."""
_MASK_CACHE_VERSION = 1
_CacheEntry = tuple[str, tuple[int, ...], np.ndarray]  # (key, mask shape, np.packbits of the mask)


def _sample_folders_kind(folder: Path) -> Optional[str]:
    """``"train"`` if ``folder`` holds Kaggle sample folders ``<id>/images/<id>.png`` with ``masks/``,
    ``"test"`` if its samples have no masks (the competition's stage1_test), else None. Looks only
    until the first sample, so a folder of 670 samples costs a few stats."""
    for d in subfolders(folder):
        if (d / "images" / f"{d.name}.png").is_file():
            return "train" if (d / "masks").is_dir() else "test"
    return None


def _find_kaggle_samples(root: Path) -> Path:
    """The folder of Kaggle sample folders: ``root`` or one found up to two levels below it (logged)."""
    if _sample_folders_kind(root) is not None or not subfolders(root):
        return root  # the documented layout, or an empty folder: the caller reports what is wrong
    found: dict[Path, str] = {}
    for level in range(2):
        folders = subfolders(root) if level == 0 else [g for f in subfolders(root) for g in subfolders(f)]
        found.update({f: kind for f in folders if (kind := _sample_folders_kind(f)) is not None})
        if any(kind == "train" for kind in found.values()):
            break
    train = [f for f, kind in found.items() if kind == "train"]
    if not train:
        tests = [str(f) for f, kind in found.items() if kind == "test"]
        if tests:
            raise DatasetError(
                f"DSB2018: below {str(root)!r} the only sample folders are in {tests}, which have no masks (the "
                f"competition's unlabelled test images); pass the unzipped stage1_train folder, whose samples have "
                f"masks/"
            )
        raise DatasetError(
            f"DSB2018: no sample folders (<id>/images/<id>.png) in {str(root)!r} or up to two levels below it; "
            f"pass the unzipped stage1_train folder. Expected layout:\n{_LAYOUT}"
        )
    if len(train) > 1:
        named = [f for f in train if f.name == "stage1_train"]
        if len(named) != 1:
            raise DatasetError(
                f"DSB2018: {str(root)!r} holds several folders of samples with masks: {[str(f) for f in train]}; "
                f"pass one of them as root"
            )
        train = named
    logger.info("DSB2018: reading the samples in %s (found below %s)", train[0], root)
    return train[0]


class DSB2018(SegmentationDataset):
    """DSB2018 nuclei: 2D microscopy images with binary nucleus masks.

    Get the data from Kaggle, competition "data-science-bowl-2018", file ``stage1_train.zip``
    (670 images; unzip it and pass that folder as ``root``). Two layouts are read:

    - Kaggle ``stage1_train``: ``<root>/<id>/images/<id>.png`` (RGBA PNG; alpha is dropped) and
      ``<root>/<id>/masks/*.png``, one PNG per nucleus; the nuclei are merged (pixel > 0 in any
      mask) into one binary mask.
    - preprocessed (as in the UNet++ and published SDN code): ``<root>/images/<id>.png`` and
      ``<root>/masks/0/<id>.png`` (one binary mask, foreground > 0).

    ``root`` may also be the unzipped competition folder (holding ``stage1_train/`` and
    ``stage1_test/``) or a folder holding a doubly nested ``stage1_train/stage1_train``: the folder
    of sample folders with masks is looked for up to two levels down (attribute ``data_dir``, an
    INFO log says which); when it cannot be found or chosen, the error says which folder to pass.

    Images are scaled to ``[0, 1]`` (``/255``), RGB (``in_channels=3``) or grey (``grayscale=True``,
    ``in_channels=1``), and resized to ``size`` (default 96 x 96, bilinear; masks nearest).
    The data has no patient grouping, so the split is a seeded random split by image id.

    Merging a sample's masks (one PNG per nucleus, up to a few hundred) costs far more than reading
    its image, so the merged mask is cached, bit-packed: in memory by default (per process: with
    DataLoader workers use ``persistent_workers=True``, or ``cache_dir``), and in ``cache_dir`` if
    given (shared by processes and runs). An entry is keyed by the names, sizes and modification
    times of the sample's mask files, so changed, added or removed masks are merged again.

    Args:
        root: data folder (see above).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        layout: ``"auto"`` (detect), ``"kaggle"`` or ``"preprocessed"``.
        size: output ``(H, W)`` or int, None keeps each image's own size; default 96.
        grayscale: convert images to one grey channel.
        val_fraction, test_fraction: fractions of images in validation / test (default 0.1 / 0.2).
        seed: seed of the split.
        transform: optional ``(image, mask) -> (image, mask)`` applied after resizing.
        cache_masks: cache merged masks (default True); False merges them on every access.
        cache_dir: optional folder for the merged masks on disk (``<id>-<key>.npz``), in addition
            to memory; None (default) keeps them in memory only.

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
        cache_masks: bool = True,
        cache_dir: Optional[Union[str, Path]] = None,
    ) -> None:
        super().__init__(size, transform)
        require_pillow()
        self.root = Path(root)
        self.split = check_split(split)
        require_dir(self.root, "DSB2018 root", _LAYOUT)
        check_choice("layout", layout, ("auto", "kaggle", "preprocessed"))
        if layout == "auto":
            layout = "preprocessed" if (self.root / "images").is_dir() and (self.root / "masks").is_dir() else "kaggle"
        self.layout = layout
        self.data_dir = _find_kaggle_samples(self.root) if layout == "kaggle" else self.root
        self.cache_masks = bool(cache_masks)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._mask_cache: dict[str, _CacheEntry] = {}
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
        dirs = subfolders(self.data_dir)  # not __MACOSX/ of a zip made on a Mac
        if not dirs:
            raise DatasetError(f"DSB2018: {str(self.data_dir)!r} has no sample folders. Expected layout:\n{_LAYOUT}")
        for d in dirs:
            image = d / "images" / f"{d.name}.png"
            if not image.is_file():
                raise DatasetError(f"DSB2018: sample folder {str(d)!r} has no image {str(image)!r}")
            mask_dir = d / "masks"
            masks = data_files(mask_dir, "*.png") if mask_dir.is_dir() else []  # not ._<name>.png resource forks
            if not masks:
                raise DatasetError(f"DSB2018: image {str(image)!r} has no masks: expected PNGs in {str(mask_dir)!r}")
            records[d.name] = (image, masks)
        return records

    def _scan_preprocessed(self) -> dict[str, tuple[Path, list[Path]]]:
        img_dir = require_dir(self.root / "images", "DSB2018 image folder", _LAYOUT)
        mask_dir = require_dir(self.root / "masks" / "0", "DSB2018 mask folder", _LAYOUT)
        images = {p.stem: p for p in data_files(img_dir, "*.png")}
        masks = {p.stem: p for p in data_files(mask_dir, "*.png")}
        for stem in sorted(set(images) - set(masks)):
            raise DatasetError(f"DSB2018: image {str(images[stem])!r} has no mask {str(mask_dir / (stem + '.png'))!r}")
        for stem in sorted(set(masks) - set(images)):
            raise DatasetError(f"DSB2018: mask {str(masks[stem])!r} has no image {str(img_dir / (stem + '.png'))!r}")
        return {stem: (images[stem], [masks[stem]]) for stem in images}

    def _load(self, record: tuple[Path, list[Path]]) -> tuple[np.ndarray, np.ndarray, None]:
        image_path, mask_paths = record
        img = read_image(image_path, "L" if self.grayscale else "RGB").astype(np.float32) / 255.0
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        shape = img.shape[1:]
        if not self.cache_masks:
            return img, self._merge(image_path, mask_paths, shape)[None].astype(np.float32), None
        sample_id = image_path.stem
        key = self._mask_key(mask_paths)
        mask = self._cached_mask(sample_id, key, shape)
        if mask is None:
            mask = self._merge(image_path, mask_paths, shape)
            self._store_mask(sample_id, key, mask)
        return img, mask[None].astype(np.float32), None

    def _merge(self, image_path: Path, mask_paths: list[Path], shape: tuple[int, ...]) -> np.ndarray:
        """Union (pixel > 0) of a sample's mask files: bool ``(H, W)``."""
        mask = np.zeros(shape, dtype=bool)
        for mp in mask_paths:
            m = read_image(mp)
            if m.ndim == 3:
                m = m[..., :3].max(axis=-1)  # RGB(A) masks: any colour channel marks the nucleus
            if m.shape != mask.shape:
                raise DatasetError(
                    f"DSB2018: mask {str(mp)!r} has size {m.shape} but image {str(image_path)!r} has {mask.shape}"
                )
            mask |= m > 0
        return mask

    # -- merged-mask cache ------------------------------------------------------------------
    @staticmethod
    def _mask_key(mask_paths: list[Path]) -> str:
        """Hash of the mask files' names, sizes and modification times (a stat each, no decoding)."""
        parts: list[object] = [_MASK_CACHE_VERSION]
        for p in mask_paths:
            try:
                st = p.stat()
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"DSB2018: mask file {str(p)!r} disappeared since the data set was listed"
                ) from None
            parts.append([p.name, st.st_size, st.st_mtime_ns])
        return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]

    def _cached_mask(self, sample_id: str, key: str, shape: tuple[int, ...]) -> Optional[np.ndarray]:
        hit: Optional[_CacheEntry] = self._mask_cache.get(sample_id)
        if (hit is None or hit[0] != key) and self.cache_dir is not None:
            path = self.cache_dir / f"{sample_id}-{key}.npz"  # maybe written by another worker or run
            if path.is_file():
                try:
                    with np.load(path) as z:
                        hit = (key, tuple(int(v) for v in z["shape"]), np.asarray(z["bits"], dtype=np.uint8))
                    if hit[2].size != (int(np.prod(hit[1])) + 7) // 8:
                        raise ValueError(f"{hit[2].size} bytes do not hold a {hit[1]} mask")
                    self._mask_cache[sample_id] = hit
                except (OSError, ValueError, KeyError) as e:
                    logger.warning("DSB2018: cached mask %s is unreadable (%s); merging the masks again", path, e)
                    hit = None
        if hit is None or hit[0] != key or hit[1] != tuple(shape):
            return None  # a different shape means the image changed: merge again, which checks the sizes
        return np.unpackbits(hit[2], count=int(np.prod(shape))).reshape(shape).astype(bool)

    def _store_mask(self, sample_id: str, key: str, mask: np.ndarray) -> None:
        bits = np.packbits(mask.ravel())
        self._mask_cache[sample_id] = (key, tuple(mask.shape), bits)
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        shape = np.asarray(mask.shape, dtype=np.int64)
        atomic_write(self.cache_dir / f"{sample_id}-{key}.npz", lambda f: np.savez(f, shape=shape, bits=bits))
