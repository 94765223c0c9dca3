"""Train and test a segmentation model on CVC-ClinicDB colonoscopy polyps.

    python examples/cvc_clinicdb.py --data-dir data/CVC-ClinicDB --model sdn_unet --out runs/cvc-sdn
    # the same run from the installed package, without the repository:
    spatialrec train --dataset cvc_clinicdb --data-dir data/CVC-ClinicDB --model sdn_unet --out runs/cvc-sdn

Defaults follow the paper: frames resized to 96 high x 128 wide, Adam 1e-4, Dice loss, early
stopping with patience 30, up to 300 epochs; split 70 / 10 / 20 % (by video sequence when
--sequence-csv maps frames to sequences, else by frame). See docs/training.md.

The run (flags, model, training with ``spatialrec.fit``, the test table, ``--resume``, the run
folder) is ``spatialrec.cli.train.run``; this data set's reader, defaults and data help are
``spatialrec.cli.datasets.CVC_CLINICDB``. In a script of your own the core is three calls::

    from spatialrec.data import CVCClinicDB
    train, val, test = (CVCClinicDB("data/CVC-ClinicDB", split=s, size=(96, 128)) for s in ("train", "val", "test"))
    model = spatialrec.create_model("sdn_unet", in_channels=train.in_channels, num_classes=train.num_classes)
    spatialrec.fit(model, train, val, test_data=test, out_dir="runs/cvc-sdn")
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spatialrec.cli.datasets import CVC_CLINICDB as SPEC
from spatialrec.cli.datasets import DatasetSpec
from spatialrec.cli.train import run


def main(spec: DatasetSpec = SPEC, argv: Optional[Sequence[str]] = None) -> int:
    """Train and test on ``spec``'s data set as the command line says; returns the exit status."""
    return run(spec, argv)


if __name__ == "__main__":
    sys.exit(main())
