"""The four public data sets the ``spatialrec train`` and ``evaluate`` commands know.

Each :class:`DatasetSpec` says where to get the data, the folder layout its reader expects, the
defaults of its training run and how to build its train / validation / test splits from the
parsed command line; everything else (flags, model, training loop, test) is shared by
:mod:`spatialrec.cli.train`. The readers themselves are in :mod:`spatialrec.data`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ._args import fraction, number, positive_int, sizes


@dataclass(frozen=True)
class DatasetSpec:
    """What makes one data set's training run: its name, data help and defaults, and its reader.

    Attributes:
        name: short name, the ``--dataset`` value and the default output folder ``runs/<name>-<model>``.
        description: first line of ``--help``.
        where_to_get: where to download the data, printed when ``--data-dir`` is missing.
        layout: the folder layout the reader expects, printed with it.
        image_size: default ``--image-size`` (H, W) of the 2D run.
        batch_size: default ``--batch-size`` of the 2D run (the published one, or a sane one).
        build: ``build(args, split, augment) -> Dataset`` for split ``"train" | "val" | "test"``.
        add_arguments: optional hook adding the data set's own flags to the parser.
        class_names: the names of the classes for the parsed command line (for ``metrics.json``).
        volumetric: whether ``--3d`` (patch training on whole CT volumes) is offered.
    """

    name: str
    description: str
    where_to_get: str
    layout: str
    image_size: tuple[int, int]
    batch_size: int
    build: Callable[[argparse.Namespace, str, bool], Any]
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    class_names: Optional[Callable[[argparse.Namespace], Sequence[str]]] = None
    volumetric: bool = False

    def data_help(self, data_dir: Path) -> str:
        """The message printed when the data folder is missing: where to get it, its layout."""
        return (
            f"{self.name}: data folder {str(data_dir)!r} not found.\n"
            f"Get the data: {self.where_to_get}\n"
            f"Expected layout under --data-dir:\n{self.layout}\n"
        )


def _augmentation(augment: bool) -> Any:
    from spatialrec.data import default_augmentation

    return default_augmentation() if augment else None


# --- DSB2018 -------------------------------------------------------------------------------------


def _build_dsb2018(args: argparse.Namespace, split: str, augment: bool) -> Any:
    from spatialrec.data import DSB2018

    return DSB2018(args.data_dir, split=split, size=args.image_size, grayscale=args.grayscale, seed=args.seed,
                   transform=_augmentation(augment))  # fmt: skip


def _dsb2018_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grayscale", action="store_true", help="read images as one grey channel")


DSB2018 = DatasetSpec(
    name="dsb2018",
    description="DSB2018 nuclei segmentation (binary), any registered model.",
    where_to_get="Kaggle competition 'data-science-bowl-2018', file stage1_train.zip (670 images); unzip it "
    "and pass the stage1_train folder.",
    layout="  Kaggle stage1_train (as downloaded):   <data-dir>/<id>/images/<id>.png\n"
    "                                         <data-dir>/<id>/masks/<any>.png   (one mask per nucleus)\n"
    "  or preprocessed (UNet++ / SDN repos):  <data-dir>/images/<id>.png\n"
    "                                         <data-dir>/masks/0/<id>.png       (one merged mask)",
    image_size=(96, 96),
    batch_size=16,
    build=_build_dsb2018,
    add_arguments=_dsb2018_arguments,
    class_names=lambda args: ["nucleus"],
)

# --- CVC-ClinicDB --------------------------------------------------------------------------------


def _build_cvc(args: argparse.Namespace, split: str, augment: bool) -> Any:
    from spatialrec.data import CVCClinicDB

    return CVCClinicDB(args.data_dir, split=split, size=args.image_size, sequence_csv=args.sequence_csv,
                       seed=args.seed, transform=_augmentation(augment))  # fmt: skip


def _cvc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sequence-csv", type=Path, default=None,
                   help="CSV of (frame, sequence) to split by video sequence (recommended)")  # fmt: skip


CVC_CLINICDB = DatasetSpec(
    name="cvc_clinicdb",
    description="CVC-ClinicDB polyp segmentation (binary), any registered model.",
    where_to_get="https://polyp.grand-challenge.org/CVCClinicDB/ (612 frames from 29 sequences, TIFF; a PNG "
    "edition circulates on Kaggle); pass the folder holding 'Original' and 'Ground Truth'.",
    layout="  <data-dir>/Original/<n>.tif       (RGB frames; the PNG edition: <n>.png)\n"
    "  <data-dir>/Ground Truth/<n>.tif   (binary polyp masks, same names)",
    image_size=(96, 128),
    batch_size=8,
    build=_build_cvc,
    add_arguments=_cvc_arguments,
    class_names=lambda args: ["polyp"],
)

# --- the CT data sets (2D slices, or --3d volumes) -----------------------------------------------


def add_3d_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--3d`` flag and the flags of the 3D mode (ignored without ``--3d``)."""
    g = p.add_argument_group("3D mode (--3d): patch-based training on whole volumes, sliding-window testing")
    g.add_argument("--3d", dest="three_d", action="store_true",
                   help="train a 3D model on volume patches and test whole volumes (default model: sdn_unet3d)")  # fmt: skip
    g.add_argument("--patch-size", type=sizes(3, "--patch-size"), default=(32, 64, 64), metavar="DxHxW",
                   help="training and inference patch (default: 32x64x64)")  # fmt: skip
    g.add_argument("--samples-per-volume", type=positive_int, default=4, help="patches per volume per epoch (default: 4)")
    g.add_argument("--fg-ratio", type=fraction, default=0.5, help="fraction of patches centred on the target (default: 0.5)")
    g.add_argument("--overlap", type=number(float, 0.0, True, 1.0, False), default=0.5,
                   help="sliding-window overlap at test time, in [0, 1) (default: 0.5)")  # fmt: skip
    g.add_argument("--sw-batch-size", type=positive_int, default=1, help="windows per forward pass at test time (default: 1)")


def _ct_arguments(p: argparse.ArgumentParser, what: str, cache: str) -> None:
    p.add_argument("--slice-filter", choices=("all", "foreground"), default="all",
                   help=f"train/test on all slices or only those containing {what} (default: all)")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where preprocessed slices go (default: $SPATIALREC_CACHE/{cache} or ~/.cache/spatialrec/{cache})")  # fmt: skip
    add_3d_arguments(p)


def _build_lits(args: argparse.Namespace, split: str, augment: bool) -> Any:
    from spatialrec.data import LiTS

    return LiTS(args.data_dir, split=split, target=args.target, size=args.image_size, slice_filter=args.slice_filter,
                cache_dir=args.cache_dir, seed=args.seed, transform=_augmentation(augment))  # fmt: skip


def _lits_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=("liver", "tumour", "both"), default="liver",
                   help="liver (incl. tumour), tumour, or both as two channels (default: liver)")  # fmt: skip
    _ct_arguments(p, "the target", "lits")


LITS = DatasetSpec(
    name="lits",
    description="LiTS liver (or tumour) segmentation on axial CT slices (or volumes with --3d), any registered model.",
    where_to_get="the LiTS challenge, https://competitions.codalab.org/competitions/17094 (also on academic "
    "torrents; the Medical Segmentation Decathlon Task03_Liver has the same volumes under other names).",
    layout="  <data-dir>/**/volume-<n>.nii[.gz]         CT volumes (any sub-folders, e.g. 'Training Batch 1')\n"
    "  <data-dir>/**/segmentation-<n>.nii[.gz]   labels 0 background, 1 liver, 2 tumour",
    image_size=(256, 256),
    batch_size=8,
    build=_build_lits,
    add_arguments=_lits_arguments,
    class_names=lambda args: ["liver", "tumour"] if args.target == "both" else [args.target],
    volumetric=True,
)

SEGTHOR_ORGANS = ("aorta", "oesophagus", "heart", "trachea", "all")


def _build_segthor(args: argparse.Namespace, split: str, augment: bool) -> Any:
    from spatialrec.data import SegTHOR

    return SegTHOR(args.data_dir, split=split, organ=args.organ, size=args.image_size, slice_filter=args.slice_filter,
                   cache_dir=args.cache_dir, seed=args.seed, transform=_augmentation(augment))  # fmt: skip


def _segthor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--organ", choices=SEGTHOR_ORGANS, default="aorta",
                   help="organ to segment, or all four as channels (default: aorta, as in the paper)")  # fmt: skip
    _ct_arguments(p, "the organ(s)", "segthor")


SEGTHOR = DatasetSpec(
    name="segthor",
    description="SegTHOR organ-at-risk segmentation (aorta by default) on axial CT slices (or volumes with --3d), "
    "any registered model.",
    where_to_get="the SegTHOR challenge, https://competitions.codalab.org/competitions/21145 (the 40 training "
    "patients with GT); pass the folder holding the Patient_<nn> folders.",
    layout="  <data-dir>/Patient_<nn>/Patient_<nn>.nii.gz   CT volume\n"
    "  <data-dir>/Patient_<nn>/GT.nii.gz             labels 0 background, 1 oesophagus, 2 heart, 3 trachea, 4 aorta",
    image_size=(256, 256),
    batch_size=8,
    build=_build_segthor,
    add_arguments=_segthor_arguments,
    class_names=lambda args: ["oesophagus", "heart", "trachea", "aorta"] if args.organ == "all" else [args.organ],
    volumetric=True,
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (DSB2018, CVC_CLINICDB, LITS, SEGTHOR)}
"""The data sets by ``--dataset`` name."""

__all__ = ["CVC_CLINICDB", "DATASETS", "DSB2018", "DatasetSpec", "LITS", "SEGTHOR", "SEGTHOR_ORGANS", "add_3d_arguments"]
