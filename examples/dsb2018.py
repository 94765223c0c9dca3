"""Train and test a segmentation model on DSB2018 nuclei (2018 Data Science Bowl).

    python examples/dsb2018.py --data-dir data/stage1_train --model sdn_unet --out runs/dsb-sdn
    # the same run from the installed package, without the repository:
    spatialrec train --dataset dsb2018 --data-dir data/stage1_train --model sdn_unet --out runs/dsb-sdn

Defaults follow the paper: 96 x 96 RGB inputs, Adam 1e-4, Dice loss, early stopping with patience
30, up to 300 epochs; the split is 70 / 10 / 20 % by image (seeded). Writes metrics.csv,
last.pt / best.pt and metrics.json (test Dice, IoU, HD95) to --out. See docs/training.md.

The run (flags, model, training with ``spatialrec.fit``, the test table, ``--resume``, the run
folder) is ``spatialrec.cli.train.run``; this data set's reader, defaults and data help are
``spatialrec.cli.datasets.DSB2018``. In a script of your own the core is three calls::

    from spatialrec.data import DSB2018
    train, val, test = (DSB2018("data/stage1_train", split=s, size=(96, 96)) for s in ("train", "val", "test"))
    model = spatialrec.create_model("sdn_unet", in_channels=train.in_channels, num_classes=train.num_classes)
    spatialrec.fit(model, train, val, test_data=test, out_dir="runs/dsb-sdn")
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spatialrec.cli.datasets import DSB2018 as SPEC
from spatialrec.cli.datasets import DatasetSpec
from spatialrec.cli.train import run


def main(spec: DatasetSpec = SPEC, argv: Optional[Sequence[str]] = None) -> int:
    """Train and test on ``spec``'s data set as the command line says; returns the exit status."""
    return run(spec, argv)


if __name__ == "__main__":
    sys.exit(main())
