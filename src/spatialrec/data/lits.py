"""LiTS (Liver Tumor Segmentation challenge) CT reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence, Union

from ._ct import CTSliceDataset, VolumeRecord
from ..checks import check_choice
from ._io import DatasetError, SizeLike, Transform, logger, require_dir

__all__ = ["LiTS"]

_LAYOUT = """\
  LiTS challenge:
    <root>/**/volume-<n>.nii[.gz]         CT volumes (any sub-folders, e.g. "Training Batch 1")
    <root>/**/segmentation-<n>.nii[.gz]   labels 0 background, 1 liver, 2 tumour
  or Medical Segmentation Decathlon Task03_Liver (<root> = Task03_Liver or a folder above it):
    <root>/**/imagesTr/liver_<n>.nii.gz   CT volumes
    <root>/**/labelsTr/liver_<n>.nii.gz   labels 0 background, 1 liver, 2 tumour (imagesTs/ has none: skipped)"""
_PATTERN = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")
_MSD_PATTERN = re.compile(r"^liver_(\d+)\.nii(\.gz)?$")
_MSD_FOLDERS = {"imagesTr": "image", "labelsTr": "labels", "imagesTs": "test"}
# Per target, the label values of each output channel (1 liver, 2 tumour).
_TARGETS = {"liver": ((1, 2),), "tumour": ((2,),), "tumor": ((2,),), "both": ((1, 2), (2,))}


class LiTS(CTSliceDataset):
    """LiTS liver / liver-tumour CT, read as axial slices.

    Get the data from the LiTS challenge (https://competitions.codalab.org/competitions/17094, or
    academic torrents): the 131 training volumes ``volume-<n>.nii`` with ``segmentation-<n>.nii``
    (0 background, 1 liver, 2 tumour), in any sub-folders of ``root``, ``.nii`` or ``.nii.gz``.

    The Medical Segmentation Decathlon's ``Task03_Liver`` (http://medicaldecathlon.com, the same
    training volumes under other names) is read too: ``imagesTr/liver_<n>.nii.gz`` with
    ``labelsTr/liver_<n>.nii.gz`` (same labels), ids ``liver_<n>``; pass ``Task03_Liver`` or a folder
    above it. ``imagesTs/`` (no labels) is skipped with an INFO log, ``dataset.json`` is not needed,
    and the archive's macOS ``._liver_<n>.nii.gz`` files are ignored. A root holding both copies is
    read through the LiTS names, with a warning.

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
        label_alignment: ``"check"`` (default) or ``"as_stored"``, see :class:`~spatialrec.data._ct.CTSliceDataset`.

    Items: ``{"image": float32 (1, H, W), "mask": float32 (K, H, W) 0/1, "id": "volume-<n>/slice<z>"
    (MSD: "liver_<n>/slice<z>"),
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
        label_alignment: str = "check",
    ) -> None:
        check_choice("target", target, tuple(_TARGETS))
        self.target = "tumour" if target == "tumor" else target
        self.channel_labels = _TARGETS[target]
        super().__init__(
            root, split, size, hu_window, scale, slice_filter, cache_dir, val_fraction, test_fraction, seed, transform,
            label_alignment,
        )  # fmt: skip

    def _scan(self) -> list[VolumeRecord]:
        require_dir(self.root, "LiTS root", _LAYOUT)
        found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}, "image": {}, "labels": {}, "test": {}}
        for p in sorted(self.root.rglob("*.nii*")):
            # MSD archives carry macOS resource forks "._liver_<n>.nii.gz" next to every file: not NIfTI.
            if p.name.startswith("._") or not p.is_file():
                continue
            m = _PATTERN.match(p.name)
            if m:
                kind, n = m.group(1), int(m.group(2))
            else:
                m = _MSD_PATTERN.match(p.name)
                if not m or p.parent.name not in _MSD_FOLDERS:
                    continue
                kind, n = _MSD_FOLDERS[p.parent.name], int(m.group(1))
            if n in found[kind]:
                raise DatasetError(f"LiTS: two files for {kind} {n}: {str(found[kind][n])!r} and {str(p)!r}")
            found[kind][n] = p
        vols, segs = found["volume"], found["segmentation"]
        msd_images, msd_labels, msd_test = found["image"], found["labels"], found["test"]
        has_msd = bool(msd_images or msd_labels)
        if vols or segs:
            if has_msd:
                # Both copies of the data under one root: keep reading the LiTS names (as always) and say so,
                # rather than reading every volume twice under two names (which would leak across splits).
                logger.warning(
                    "LiTS: %s holds LiTS volume-<n>/segmentation-<n> files and also Medical Segmentation Decathlon "
                    "Task03_Liver files (e.g. %s); reading the LiTS files and ignoring the Task03_Liver ones. Pass "
                    "the folder of one copy to choose.", self.root, next(iter((msd_images or msd_labels).values())),
                )  # fmt: skip
            kinds = ("volume", "segmentation")
            return self._pair(vols, segs, kinds, ("volume-{n}.nii[.gz]", "segmentation-{n}.nii[.gz]"), "volume-{n}")
        if not has_msd:
            raise DatasetError(
                f"LiTS: no volume-<n>.nii[.gz] files (nor Task03_Liver imagesTr/liver_<n>.nii.gz) under "
                f"{str(self.root)!r}. Expected layout:\n{_LAYOUT}"
            )
        if msd_test:
            logger.info(
                "LiTS: skipping %d unlabelled Task03_Liver test volumes in imagesTs (e.g. %s)",
                len(msd_test), next(iter(msd_test.values())),
            )  # fmt: skip
        partners = ("image imagesTr/liver_{n}.nii[.gz]", "labels labelsTr/liver_{n}.nii[.gz]")
        return self._pair(msd_images, msd_labels, ("image", "labels"), partners, "liver_{n}")

    @staticmethod
    def _pair(
        images: dict[int, Path],
        labels: dict[int, Path],
        kinds: tuple[str, str],
        partners: tuple[str, str],
        volume_id: str,
    ) -> list[VolumeRecord]:
        """One record per number with both files; a file without its partner raises, naming it.

        ``kinds``: what an image / a labels file is called; ``partners``: the image / labels file a
        lonely partner lacks and ``volume_id`` the id, both formatted with ``n``.
        """
        for n in sorted(set(images) - set(labels)):
            raise DatasetError(f"LiTS: {kinds[0]} {str(images[n])!r} has no {partners[1].format(n=n)}")
        for n in sorted(set(labels) - set(images)):
            raise DatasetError(f"LiTS: {kinds[1]} {str(labels[n])!r} has no {partners[0].format(n=n)}")
        ids = {n: volume_id.format(n=n) for n in images}
        return [VolumeRecord(ids[n], ids[n], images[n], labels[n]) for n in sorted(images)]
