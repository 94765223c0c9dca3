"""The ``spatialrec`` command (also ``python -m spatialrec``), one module per sub-command.

::

    spatialrec demo        # the holistic demo: U-Net vs SDN-UNet on a long-range synthetic task
    spatialrec train       # train and test on DSB2018, CVC-ClinicDB, LiTS or SegTHOR (2D, or --3d)
    spatialrec evaluate    # test a checkpoint on a data set's test split
    spatialrec info        # versions, scan backends, Triton and CUDA status

``spatialrec <command> --help`` lists a command's flags. A bad argument is a usage error: a
one-line message and exit status 2, no traceback. The modules (:mod:`spatialrec.cli.demo`,
:mod:`spatialrec.cli.train`, :mod:`spatialrec.cli.evaluate`, :mod:`spatialrec.cli.info`) each
have a ``main(argv) -> int`` that scripts may call; the repository's ``examples/`` do.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

COMMANDS: dict[str, str] = {
    "demo": "the holistic demo: a U-Net and an SDN-UNet on a task whose answer lies half an image away",
    "train": "train and test a model on DSB2018, CVC-ClinicDB, LiTS or SegTHOR (2D, or --3d for the CT sets)",
    "evaluate": "test a checkpoint on a data set's test split and print the summary table",
    "info": "versions, the scan backends usable here, Triton and CUDA status",
}
"""The sub-commands and their one-line descriptions; each is the module ``spatialrec.cli.<name>``."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the commands, ``--version``."""
    from spatialrec import __version__

    p = argparse.ArgumentParser(
        prog="spatialrec",
        description="Spatial-recurrence (SDN) layers and segmentation models: demo, training, evaluation.",
        epilog="`spatialrec COMMAND --help` lists the flags of a command.",
    )
    p.add_argument("--version", action="version", version=f"spatialrec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``spatialrec`` with ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        build_parser().parse_args(args)  # --help, --version, or a missing or unknown command: exits
        return 2  # not reached
    command = importlib.import_module(f"spatialrec.cli.{args[0]}")
    try:
        status: int = command.main(args[1:], prog=f"spatialrec {args[0]}")
    except KeyboardInterrupt:
        sys.stderr.write(f"spatialrec {args[0]}: interrupted\n")
        return 130
    return status


__all__ = ["COMMANDS", "build_parser", "main"]
