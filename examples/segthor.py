"""Train and test a segmentation model on SegTHOR thoracic CT (the aorta by default), slice by slice.

    python examples/segthor.py --data-dir data/SegTHOR/train --model sdn_unet --out runs/segthor-sdn

Axial slices of the 40 training patients, HU window (-1000, 1000) scaled to [0, 1], resized to
256 x 256 (--image-size 128x256 matches the published loader); split 70 / 10 / 20 % by patient.
The first run preprocesses the volumes into --cache-dir. Adam 1e-4, Dice loss, patience 30, up to
300 epochs. HD95 is in mm.

With --3d: a 3D model (default sdn_unet3d) trained on random volume patches and tested on whole
volumes by sliding windows, Dice and HD95 in mm per volume (see examples/_volumetric.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ExampleSpec, main  # noqa: E402
from _volumetric import add_3d_arguments, main3d, wants_3d  # noqa: E402

ORGANS = ("aorta", "oesophagus", "heart", "trachea", "all")


def build(args: argparse.Namespace, split: str, augment: bool):
    from spatialrec.data import SegTHOR, default_augmentation

    return SegTHOR(
        args.data_dir, split=split, organ=args.organ, size=args.image_size, slice_filter=args.slice_filter,
        cache_dir=args.cache_dir, seed=args.seed, transform=default_augmentation() if augment else None,
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--organ", choices=ORGANS, default="aorta",
                   help="organ to segment, or all four as channels (default: aorta, as in the paper)")  # fmt: skip
    p.add_argument("--slice-filter", choices=("all", "foreground"), default="all",
                   help="train/test on all slices or only those containing the organ(s) (default: all)")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where preprocessed slices go (default: $SPATIALREC_CACHE/segthor or ~/.cache/spatialrec/segthor)")  # fmt: skip
    add_3d_arguments(p)  # --3d: patch-based 3D training, volume-level testing (examples/_volumetric.py)


SPEC = ExampleSpec(
    name="segthor",
    description="SegTHOR organ-at-risk segmentation (aorta by default) on axial CT slices, any registered model.",
    where_to_get="the SegTHOR challenge, https://competitions.codalab.org/competitions/21145 (the 40 training "
    "patients with GT); pass the folder holding the Patient_<nn> folders.",
    layout="  <data-dir>/Patient_<nn>/Patient_<nn>.nii.gz   CT volume\n"
    "  <data-dir>/Patient_<nn>/GT.nii.gz             labels 0 background, 1 oesophagus, 2 heart, 3 trachea, 4 aorta",
    image_size=(256, 256),
    batch_size=8,
    build=build,
    add_arguments=add_arguments,
    class_names=lambda args: ["oesophagus", "heart", "trachea", "aorta"] if args.organ == "all" else [args.organ],
)


def run(argv: "list[str] | None" = None) -> int:
    """The 2D slice pipeline, or with ``--3d`` the volumetric one (``examples/_volumetric.py``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return main3d(SPEC, args) if wants_3d(args) else main(SPEC, args)


if __name__ == "__main__":
    sys.exit(run())
