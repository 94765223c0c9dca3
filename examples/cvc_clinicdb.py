"""Train and test a segmentation model on CVC-ClinicDB colonoscopy polyps.

    python examples/cvc_clinicdb.py --data-dir data/CVC-ClinicDB --model sdn_unet --out runs/cvc-sdn

Defaults follow the paper: frames resized to 96 high x 128 wide, Adam 1e-4, Dice loss, early
stopping with patience 30, up to 300 epochs; split 70 / 10 / 20 % (by video sequence when
--sequence-csv maps frames to sequences, else by frame). See docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ExampleSpec, main  # noqa: E402


def build(args: argparse.Namespace, split: str, augment: bool):
    from spatialrec.data import CVCClinicDB, default_augmentation

    return CVCClinicDB(
        args.data_dir, split=split, size=args.image_size, sequence_csv=args.sequence_csv, seed=args.seed,
        transform=default_augmentation() if augment else None,
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sequence-csv", type=Path, default=None,
                   help="CSV of (frame, sequence) to split by video sequence (recommended)")  # fmt: skip


SPEC = ExampleSpec(
    name="cvc_clinicdb",
    description="CVC-ClinicDB polyp segmentation (binary), any registered model.",
    where_to_get="https://polyp.grand-challenge.org/CVCClinicDB/ (612 frames from 29 sequences, TIFF; a PNG "
    "edition circulates on Kaggle); pass the folder holding 'Original' and 'Ground Truth'.",
    layout="  <data-dir>/Original/<n>.tif       (RGB frames; the PNG edition: <n>.png)\n"
    "  <data-dir>/Ground Truth/<n>.tif   (binary polyp masks, same names)",
    image_size=(96, 128),
    batch_size=8,
    build=build,
    add_arguments=add_arguments,
    class_names=lambda args: ["polyp"],
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
