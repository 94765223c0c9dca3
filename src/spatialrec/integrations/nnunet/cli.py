"""The command ``spatialrec-nnunet`` (also ``python -m spatialrec.integrations.nnunet``): write an
nnU-Net v2 plans file naming the SDN networks (:func:`~spatialrec.integrations.nnunet.plans.convert_plans`)
and print the ``nnUNetv2_train`` commands that train them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional, Union

from .networks import DEFAULT_SDN_OPTIONS, PACKAGE
from .plans import DEFAULT_PLANS_IDENTIFIER, PlansError, convert_plans


def _direction(text: str) -> Union[str, int]:
    return int(text) if text.lstrip("-").isdigit() else text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spatialrec-nnunet",
        description=(
            "Write an nnU-Net v2 plans file whose configurations use spatialrec's SDN networks "
            "(SDNPlainConvUNet / SDNResidualEncoderUNet), and print the nnUNetv2_train command."
        ),
    )
    p.add_argument("plans_file", help="an nnU-Net v2 plans file, e.g. $nnUNet_preprocessed/Dataset001_X/nnUNetPlans.json")
    p.add_argument("-c", "--configurations", nargs="+", default=None, metavar="CONF",
                   help="configurations to convert (default: every one that defines an architecture)")
    p.add_argument("-o", "--plans-identifier", default=DEFAULT_PLANS_IDENTIFIER,
                   help=f"name of the new plans (default {DEFAULT_PLANS_IDENTIFIER}); written as <name>.json beside the input")
    p.add_argument("--stages", type=int, nargs="+", default=list(DEFAULT_SDN_OPTIONS["sdn_stages"]), metavar="I",
                   help="encoder stages that get SDN, negative from the deepest (default: -2 -1)")
    p.add_argument("--state-size", type=int, default=DEFAULT_SDN_OPTIONS["sdn_state_size"],
                   help="SDN state size S (default 16)")
    p.add_argument("--directions", nargs="+", type=_direction, default=None, metavar="DIR",
                   help="sweep directions, names or codes (default: each axis once: right down [in])")
    p.add_argument("--gate-init", type=float, default=DEFAULT_SDN_OPTIONS["sdn_gate_init"],
                   help="initial weight of the conv branch, in (0, 1); 0.5 (default) gives a bit-exact start")
    p.add_argument("--backend", default=DEFAULT_SDN_OPTIONS["sdn_backend"], help="scan backend (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plans file of that name")
    return p  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``spatialrec-nnunet``: convert a plans file; returns the exit status (2: bad input)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        target, plans = convert_plans(
            args.plans_file,
            args.configurations,
            plans_identifier=args.plans_identifier,
            overwrite=args.overwrite,
            sdn_stages=tuple(args.stages),
            sdn_state_size=args.state_size,
            sdn_directions=None if args.directions is None else tuple(args.directions),
            sdn_gate_init=args.gate_init,
            sdn_backend=args.backend,
        )
    except PlansError as err:
        parser.print_usage(sys.stderr)
        print(f"spatialrec-nnunet: error: {err}", file=sys.stderr)
        return 2
    converted = [c for c, cfg in plans["configurations"].items()
                 if cfg.get("architecture", {}).get("network_class_name", "").startswith(PACKAGE + ".")]  # fmt: skip
    print(f"wrote {target}")
    for conf in converted:
        print(f"nnUNetv2_train {plans['dataset_name']} {conf} FOLD -p {args.plans_identifier}")
    return 0


__all__ = ["main"]
