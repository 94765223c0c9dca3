"""Train and test a segmentation model on DSB2018 nuclei (2018 Data Science Bowl).

    python examples/dsb2018.py --data-dir data/stage1_train --model sdn_unet --out runs/dsb-sdn

Defaults follow the paper: 96 x 96 RGB inputs, Adam 1e-4, Dice loss, early stopping with patience
30, up to 300 epochs; the split is 70 / 10 / 20 % by image (seeded). Writes metrics.csv,
last.pt / best.pt and metrics.json (test Dice, IoU, HD95) to --out. See docs/training.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ExampleSpec, main  # noqa: E402


def build(args: argparse.Namespace, split: str, augment: bool):
    from spatialrec.data import DSB2018, default_augmentation

    return DSB2018(
        args.data_dir, split=split, size=args.image_size, grayscale=args.grayscale, seed=args.seed,
        transform=default_augmentation() if augment else None,
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grayscale", action="store_true", help="read images as one grey channel")


SPEC = ExampleSpec(
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
    build=build,
    add_arguments=add_arguments,
    class_names=lambda args: ["nucleus"],
)

if __name__ == "__main__":
    sys.exit(main(SPEC))
