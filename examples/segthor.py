"""Train and test a segmentation model on SegTHOR thoracic CT (the aorta by default), slice by slice
(or in 3D with --3d).

    python examples/segthor.py --data-dir data/SegTHOR/train --model sdn_unet --out runs/segthor-sdn
    # the same run from the installed package, without the repository:
    spatialrec train --dataset segthor --data-dir data/SegTHOR/train --model sdn_unet --out runs/segthor-sdn

Axial slices of the 40 training patients, HU window (-1000, 1000) scaled to [0, 1], resized to
256 x 256 (--image-size 128x256 matches the published loader); split 70 / 10 / 20 % by patient.
The first run preprocesses the volumes into --cache-dir. Adam 1e-4, Dice loss, patience 30, up to
300 epochs. HD95 is in mm.

With --3d: a 3D model (default sdn_unet3d) trained on random volume patches and tested on whole
volumes by sliding windows, Dice and HD95 in mm per volume (``spatialrec.cli.train.train_3d``).

The run (flags, model, training with ``spatialrec.fit``, the test table, ``--resume``, the run
folder) is ``spatialrec.cli.train.run``; this data set's reader, defaults and data help are
``spatialrec.cli.datasets.SEGTHOR``. In a script of your own the core is three calls::

    from spatialrec.data import SegTHOR
    train, val, test = (SegTHOR("data/SegTHOR/train", split=s, size=(256, 256)) for s in ("train", "val", "test"))
    model = spatialrec.create_model("sdn_unet", in_channels=train.in_channels, num_classes=train.num_classes)
    spatialrec.fit(model, train, val, test_data=test, out_dir="runs/segthor-sdn")
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spatialrec.cli.datasets import SEGTHOR as SPEC
from spatialrec.cli.datasets import DatasetSpec
from spatialrec.cli.train import run


def main(spec: DatasetSpec = SPEC, argv: Optional[Sequence[str]] = None) -> int:
    """Train and test on ``spec``'s data set as the command line says; returns the exit status."""
    return run(spec, argv)


if __name__ == "__main__":
    sys.exit(main())
