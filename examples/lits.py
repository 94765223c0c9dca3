"""Train and test a segmentation model on LiTS liver CT, slice by slice.

    python examples/lits.py --data-dir data/LiTS --model sdn_unet --out runs/lits-sdn

Axial slices of the 131 training volumes, HU window (-200, 250) scaled to [0, 1], resized to
256 x 256; split 70 / 10 / 20 % by volume (never by slice). The first run preprocesses the
volumes into --cache-dir. Adam 1e-4, Dice loss, patience 30, up to 300 epochs. HD95 is in mm.

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


def build(args: argparse.Namespace, split: str, augment: bool):
    from spatialrec.data import LiTS, default_augmentation

    return LiTS(
        args.data_dir, split=split, target=args.target, size=args.image_size, slice_filter=args.slice_filter,
        cache_dir=args.cache_dir, seed=args.seed, transform=default_augmentation() if augment else None,
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=("liver", "tumour", "both"), default="liver",
                   help="liver (incl. tumour), tumour, or both as two channels (default: liver)")  # fmt: skip
    p.add_argument("--slice-filter", choices=("all", "foreground"), default="all",
                   help="train/test on all slices or only those containing the target (default: all)")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where preprocessed slices go (default: $SPATIALREC_CACHE/lits or ~/.cache/spatialrec/lits)")  # fmt: skip
    add_3d_arguments(p)  # --3d: patch-based 3D training, volume-level testing (examples/_volumetric.py)


SPEC = ExampleSpec(
    name="lits",
    description="LiTS liver (or tumour) segmentation on axial CT slices, any registered model.",
    where_to_get="the LiTS challenge, https://competitions.codalab.org/competitions/17094 (also on academic "
    "torrents; the Medical Segmentation Decathlon Task03_Liver has the same volumes under other names).",
    layout="  <data-dir>/**/volume-<n>.nii[.gz]         CT volumes (any sub-folders, e.g. 'Training Batch 1')\n"
    "  <data-dir>/**/segmentation-<n>.nii[.gz]   labels 0 background, 1 liver, 2 tumour",
    image_size=(256, 256),
    batch_size=8,
    build=build,
    add_arguments=add_arguments,
    class_names=lambda args: ["liver", "tumour"] if args.target == "both" else [args.target],
)


def run(argv: "list[str] | None" = None) -> int:
    """The 2D slice pipeline, or with ``--3d`` the volumetric one (``examples/_volumetric.py``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return main3d(SPEC, args) if wants_3d(args) else main(SPEC, args)


if __name__ == "__main__":
    sys.exit(run())
