"""CVC-ClinicDB colonoscopy polyp reader."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._io import (
    DatasetError, SegmentationDataset, SizeLike, Transform, logger, read_image, require_dir, require_pillow,
    subfolders
)
from .splits import assign_splits, check_split

__all__ = ["CVCClinicDB"]

_LAYOUT = """\
  <root>/Original/<n>.tif       (RGB frames; the PNG edition: <n>.png)
  <root>/Ground Truth/<n>.tif   (binary polyp masks, same names)"""
_EXTENSIONS = (".tif", ".tiff", ".png")
# Earlier names win. "frame_id"/"sequence_id" are the columns of the common mirror's metadata.csv.
_FRAME_COLUMNS = ("frame", "frame_id", "image", "image_id", "id", "filename", "file")
_SEQUENCE_COLUMNS = ("sequence", "sequence_id", "video", "seq", "video_id")
# Several editions side by side (the common mirror holds TIF/ and PNG/): the publisher's TIFF first.
_EDITION_PREFERENCE = ("tif", "tiff")


def _is_edition(folder: Path) -> bool:
    return (folder / "Original").is_dir() and (folder / "Ground Truth").is_dir()


def _find_edition(root: Path) -> Path:
    """The folder holding ``Original/`` and ``Ground Truth/``: ``root`` itself, or one found up to two
    levels below it (a mirror's ``TIF/`` and ``PNG/``, an archive's ``CVC-ClinicDB/``), logged."""
    if (root / "Original").is_dir() or (root / "Ground Truth").is_dir():
        return root  # the documented layout (a missing half is reported by the caller)
    found = [d for d in subfolders(root) if _is_edition(d)]
    if not found:
        found = [d for sub in subfolders(root) for d in subfolders(sub) if _is_edition(d)]
    if not found:
        raise FileNotFoundError(
            f"CVC-ClinicDB image folder: folder {str(root / 'Original')!r} not found, nor a folder holding "
            f"'Original' and 'Ground Truth' up to two levels below {str(root)!r}; pass the folder that holds "
            f"them (in the common mirror: its 'TIF' or 'PNG' folder). Expected layout:\n{_LAYOUT}"
        )
    if len(found) == 1:
        chosen = found[0]
        logger.info("CVC-ClinicDB: reading the frames in %s (found below %s)", chosen, root)
        return chosen
    preferred = [d for d in found if d.name.lower() in _EDITION_PREFERENCE]
    if len(preferred) != 1:
        raise DatasetError(
            f"CVC-ClinicDB: {str(root)!r} holds several folders with 'Original' and 'Ground Truth': "
            f"{[str(d) for d in found]}; pass one of them as root"
        )
    chosen = preferred[0]
    others = ", ".join(str(d) for d in found if d != chosen)
    logger.info(
        "CVC-ClinicDB: %s holds several editions; reading the TIFF one, %s (the publisher's format). Pass %s as "
        "root to read that one instead.", root, chosen, others,
    )  # fmt: skip
    return chosen


def _read_sequence_csv(path: Path) -> dict[str, str]:
    """``{frame stem: sequence}`` from a CSV with (frame, sequence) columns, header optional."""
    if not path.is_file():
        raise FileNotFoundError(f"CVC-ClinicDB: sequence CSV {str(path)!r} not found")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"CVC-ClinicDB: sequence CSV {str(path)!r} is empty")
    header = [c.strip().lower() for c in rows[0]]
    fi = next((header.index(c) for c in _FRAME_COLUMNS if c in header), None)
    si = next((header.index(c) for c in _SEQUENCE_COLUMNS if c in header), None)
    if fi is not None and si is not None:
        rows = rows[1:]
    elif len(rows[0]) == 2:
        fi, si = 0, 1
    else:
        raise DatasetError(
            f"CVC-ClinicDB: sequence CSV {str(path)!r} needs a header naming a frame column {_FRAME_COLUMNS} "
            f"and a sequence column {_SEQUENCE_COLUMNS}, or exactly two columns (frame, sequence); "
            f"got first row {rows[0]}"
        )
    mapping: dict[str, str] = {}
    for row in rows:
        if len(row) <= max(fi, si):
            raise DatasetError(f"CVC-ClinicDB: sequence CSV {str(path)!r} row {row} has too few columns")
        frame = Path(row[fi].strip()).stem
        seq = row[si].strip()
        if not frame or not seq:
            raise DatasetError(f"CVC-ClinicDB: sequence CSV {str(path)!r} row {row} has an empty frame or sequence")
        if frame in mapping and mapping[frame] != seq:
            raise DatasetError(
                f"CVC-ClinicDB: sequence CSV {str(path)!r} maps frame {frame!r} to both {mapping[frame]!r} and {seq!r}"
            )
        mapping[frame] = seq
    return mapping


def _frame_key(stem: str) -> tuple[int, object]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


class CVCClinicDB(SegmentationDataset):
    """CVC-ClinicDB: 612 colonoscopy frames (384 x 288) from 29 sequences, with polyp masks.

    (29 sequences from 25 video studies, as the publisher's page states and its frame-to-sequence
    table lists: 29 consecutive frame ranges covering frames 1-612. Some papers write 31.)

    Get the data from the CVC-ClinicDB page of the Computer Vision Center, Barcelona
    (https://polyp.grand-challenge.org/CVCClinicDB/), or its mirrors (e.g. Kaggle
    "cvcclinicdb"). Expected layout::

        <root>/Original/<n>.tif        RGB frames (or <n>.png in the PNG edition)
        <root>/Ground Truth/<n>.tif    masks, same names (foreground = grey level > 127)

    ``root`` may also be a folder above that: the folder holding ``Original/`` and ``Ground Truth/``
    is looked for up to two levels down (attribute ``data_dir``, logged). The common mirror holds two
    editions, ``TIF/`` and ``PNG/``: the TIFF one (the publisher's format) is read; pass
    ``<root>/PNG`` for the other. Several other candidates raise, listing them.

    Frames of one sequence are near duplicates, so a frame-wise random split leaks: pass
    ``sequence_csv``, a CSV mapping each frame to its sequence (header with a frame column, e.g.
    ``frame`` or ``frame_id``, and a sequence column, e.g. ``sequence`` or ``sequence_id``; or two
    columns without a header), to split by sequence; the mirror's ``metadata.csv`` is such a file.
    Without it the split is a seeded random split by frame and a warning is logged (naming a
    ``metadata.csv`` next to the frames, if there is one).

    Images are scaled to ``[0, 1]`` and resized to ``size`` (default 96 high x 128 wide).

    Args:
        root: data folder (see above).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        size: output ``(H, W)`` or int, None keeps 288 x 384; default ``(96, 128)``.
        sequence_csv: optional CSV mapping frame to sequence; every frame must be listed.
        val_fraction, test_fraction: fractions of sequences (or frames) in validation / test
            (default 0.1 / 0.2).
        seed: seed of the split.
        transform: optional ``(image, mask) -> (image, mask)`` applied after resizing.

    Items: ``{"image": float32 (3, H, W), "mask": float32 (1, H, W) 0/1, "id": str (frame name)}``.
    """

    in_channels = 3
    num_classes = 1

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        size: SizeLike = (96, 128),
        sequence_csv: Optional[Union[str, Path]] = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        super().__init__(size, transform)
        require_pillow()
        self.root = Path(root)
        self.split = check_split(split)
        require_dir(self.root, "CVC-ClinicDB root", _LAYOUT)
        self.data_dir = _find_edition(self.root)
        img_dir = require_dir(self.data_dir / "Original", "CVC-ClinicDB image folder", _LAYOUT)
        mask_dir = require_dir(self.data_dir / "Ground Truth", "CVC-ClinicDB mask folder", _LAYOUT)
        images = self._list(img_dir)
        masks = self._list(mask_dir)
        if not images:
            raise DatasetError(f"CVC-ClinicDB: no .tif/.png frames in {str(img_dir)!r}. Expected layout:\n{_LAYOUT}")
        for stem in sorted(set(images) - set(masks), key=_frame_key):
            raise DatasetError(f"CVC-ClinicDB: image {str(images[stem])!r} has no mask in {str(mask_dir)!r}")
        for stem in sorted(set(masks) - set(images), key=_frame_key):
            raise DatasetError(f"CVC-ClinicDB: mask {str(masks[stem])!r} has no image in {str(img_dir)!r}")
        if sequence_csv is not None:
            seq_of = _read_sequence_csv(Path(sequence_csv))
            for stem in sorted(set(images) - set(seq_of), key=_frame_key):
                raise DatasetError(
                    f"CVC-ClinicDB: frame {str(images[stem])!r} is not listed in sequence CSV {str(sequence_csv)!r}"
                )
            for stem in sorted(set(seq_of) - set(images), key=_frame_key):
                raise DatasetError(
                    f"CVC-ClinicDB: sequence CSV {str(sequence_csv)!r} lists frame {stem!r}, which is not in "
                    f"{str(img_dir)!r}"
                )
            groups = {stem: seq_of[stem] for stem in images}
        else:
            candidates = [folder / "metadata.csv" for folder in (self.root, self.data_dir, self.data_dir.parent)]
            found_csv = next((c for c in candidates if c.is_file()), None)
            logger.warning(
                "CVC-ClinicDB: no sequence_csv given, splitting %s by frame with seed %d; frames of one video "
                "sequence can land in different splits, which inflates validation/test scores%s",
                self.data_dir,
                seed,
                f". {found_csv} looks like the mirror's frame-to-sequence file: pass sequence_csv='{found_csv}' "
                "to split by sequence"
                if found_csv is not None
                else "",
            )
            groups = {stem: stem for stem in images}
        self.groups = groups
        assignment = assign_splits(groups.values(), val_fraction, test_fraction, seed)
        for stem in sorted(images, key=_frame_key):
            if split == "all" or assignment[groups[stem]] == split:
                self._ids.append(stem)
                self._samples.append((images[stem], masks[stem]))
        self._finish_init("CVC-ClinicDB", self.root)

    @staticmethod
    def _list(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in _EXTENSIONS:
                if p.stem in found:
                    raise DatasetError(f"CVC-ClinicDB: two files for frame {p.stem!r}: {str(found[p.stem])!r}, {str(p)!r}")
                found[p.stem] = p
        return found

    def _load(self, record: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray, None]:
        image_path, mask_path = record
        img = read_image(image_path, "RGB").astype(np.float32) / 255.0
        mask = read_image(mask_path, "L")
        if mask.shape != img.shape[:2]:
            raise DatasetError(
                f"CVC-ClinicDB: mask {str(mask_path)!r} has size {mask.shape} but image {str(image_path)!r} "
                f"has {img.shape[:2]}"
            )
        # 0/255 masks are cut at half range (some editions carry compression noise near 0 and 255);
        # masks already stored as 0/1 are cut at 0.
        fg = mask > (127 if mask.max() > 1 else 0)
        return img.transpose(2, 0, 1), fg[None].astype(np.float32), None
