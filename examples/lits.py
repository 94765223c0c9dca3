"""Train and test a segmentation model on LiTS liver CT, slice by slice (or in 3D with --3d).

    python examples/lits.py --data-dir data/LiTS --model sdn_unet --out runs/lits-sdn
    # the same run from the installed package, without the repository:
    spatialrec train --dataset lits --data-dir data/LiTS --model sdn_unet --out runs/lits-sdn

Axial slices of the 131 training volumes, HU window (-200, 250) scaled to [0, 1], resized to
256 x 256; split 70 / 10 / 20 % by volume (never by slice). The first run preprocesses the
volumes into --cache-dir. Adam 1e-4, Dice loss, patience 30, up to 300 epochs. HD95 is in mm.

With --3d: a 3D model (default sdn_unet3d) trained on random volume patches and tested on whole
volumes by sliding windows, Dice and HD95 in mm per volume (``spatialrec.cli.train.train_3d``).

The run (flags, model, training with ``spatialrec.fit``, the test table, ``--resume``, the run
folder) is ``spatialrec.cli.train.run``; this data set's reader, defaults and data help are
``spatialrec.cli.datasets.LITS``. In a script of your own the core is three calls::

    from spatialrec.data import LiTS
    train, val, test = (LiTS("data/LiTS", split=s, target="liver", size=(256, 256)) for s in ("train", "val", "test"))
    model = spatialrec.create_model("sdn_unet", in_channels=train.in_channels, num_classes=train.num_classes)
    spatialrec.fit(model, train, val, test_data=test, out_dir="runs/lits-sdn")
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from spatialrec.cli.datasets import LITS as SPEC
from spatialrec.cli.datasets import DatasetSpec
from spatialrec.cli.train import run


def main(spec: DatasetSpec = SPEC, argv: Optional[Sequence[str]] = None) -> int:
    """Train and test on ``spec``'s data set as the command line says; returns the exit status."""
    return run(spec, argv)


if __name__ == "__main__":
    sys.exit(main())
