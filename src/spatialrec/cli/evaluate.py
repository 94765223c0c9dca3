"""``spatialrec evaluate``: test a checkpoint on a data set's test split and print the summary table.

::

    spatialrec evaluate --dataset dsb2018 --data-dir data/stage1_train --checkpoint runs/dsb2018-sdn_unet/best.pt

A checkpoint written by ``spatialrec train`` (or :func:`spatialrec.train.fit`) holds the weights
and the run's seed, which fixes the split; the ``metrics.json`` that ``spatialrec train`` writes
beside it records the model, its arguments, the image size, the data set's own flags and
whether the run was ``--3d``. Those recorded values are the defaults here, so a run is tested
again by naming its checkpoint; a flag on the command line overrides them. Without a
``metrics.json`` (a run stopped early, a checkpoint of a script of your own) give ``--model``
and its ``--model-arg`` values.

2D models are tested image by image (:func:`spatialrec.train.evaluate`), ``--3d`` models on
whole volumes by sliding windows (:func:`spatialrec.inference.evaluate_volumes`); both give the
summary format of :mod:`spatialrec.summary`, printed as a table and written to ``--output``
when it is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ._args import (
    build_model,
    check_device,
    check_model,
    check_progress,
    fail,
    non_negative_int,
    positive_int,
    results_table,
    sizes,
)
from .datasets import DATASETS, DatasetSpec
from .train import add_model_arguments, chosen_dataset, wants_3d

PROG = "spatialrec evaluate"


def build_parser(spec: Optional[DatasetSpec], prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``spatialrec evaluate`` for ``spec`` (``None``: before a data set is chosen)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=tuple(DATASETS), required=True,
                   help="the data set; `--dataset NAME --help` lists its own flags")  # fmt: skip
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding the data set")
    p.add_argument("--checkpoint", type=Path, required=True, help="a best.pt or last.pt written by a training run")
    add_model_arguments(p, None)
    size = spec.image_size if spec else (96, 96)
    p.add_argument("--image-size", type=sizes(2, "--image-size"), default=size, metavar="HxW",
                   help=f"resize images to this size (default: the run's, else {size[0]}x{size[1]})")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the split (default: the checkpoint's)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision")
    p.add_argument("--output", type=Path, default=None, help="also write the summary (with per-case rows) to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if spec is not None and spec.add_arguments is not None:
        spec.add_arguments(p)
    return p


def _option(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def recorded_defaults(checkpoint: Path) -> dict[str, Any]:
    """What the run of ``checkpoint`` recorded in the ``metrics.json`` beside it, as parser defaults."""
    record = checkpoint.parent / "metrics.json"
    if not record.is_file():
        return {}
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}  # an unreadable record only loses the defaults; the flags still work
    defaults: dict[str, Any] = {}
    if isinstance(info.get("model"), str):
        defaults["model"] = info["model"]
        defaults["model_arg"] = list((info.get("model_args") or {}).items())
    if isinstance(info.get("image_size"), list):
        defaults["image_size"] = tuple(info["image_size"])
    if isinstance(info.get("patch_size"), list):
        defaults["patch_size"] = tuple(info["patch_size"])
    for k, v in (info.get("dataset_args") or {}).items():
        defaults[k] = tuple(v) if isinstance(v, list) else v
    return defaults


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """``spatialrec evaluate``. Returns the exit status: 0 done, 1 the checkpoint cannot be read or
    does not fit the model, 2 a usage error or data that cannot be found or read."""
    from spatialrec.train import CheckpointError, evaluate
    from spatialrec.train.checkpoint import load_checkpoint

    args_in = list(sys.argv[1:] if argv is None else argv)
    name = chosen_dataset(args_in)
    spec = DATASETS.get(name) if name is not None else None
    parser = build_parser(spec, prog)
    if spec is None:
        parser.parse_args(args_in)  # --help, or --dataset missing or unknown: argparse says so
        return 2
    checkpoint = _option(args_in, "--checkpoint")
    recorded = recorded_defaults(Path(checkpoint)) if checkpoint else {}
    if spec.volumetric and (wants_3d(args_in) or "patch_size" in recorded):
        parser.set_defaults(three_d=True, image_size=(spec.image_size[0] // 2, spec.image_size[1] // 2))
    parser.set_defaults(**recorded)
    args = parser.parse_args(args_in)
    if args.model is None:
        fail(parser, f"--model is needed: no metrics.json beside {str(args.checkpoint)!r} records the run's model")
    check_model(parser, args.model, dict(args.model_arg))
    check_device(parser, args.device)
    check_progress(parser, not args.no_progress)
    if not args.checkpoint.is_file():
        fail(parser, f"--checkpoint {str(args.checkpoint)!r}: no such file")
    three_d = bool(getattr(args, "three_d", False))
    try:
        state = load_checkpoint(args.checkpoint)
    except CheckpointError as err:
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    if args.seed is None:
        args.seed = int(state.get("config", {}).get("seed", 0))
    if not args.data_dir.is_dir():
        sys.stderr.write(spec.data_help(args.data_dir))
        return 2
    test: Any  # a data set of images, or CTVolumes (a sequence of volumes)
    try:
        if three_d:
            from spatialrec.data.volumes3d import CTVolumes

            args.slice_filter = "all"  # whole volumes: every slice
            test = CTVolumes(spec.build(args, "test", False))
        else:
            test = spec.build(args, "test", False)
    except (FileNotFoundError, ValueError) as err:
        sys.stderr.write(f"{spec.name}: cannot read the data in {str(args.data_dir)!r}:\n{err}\n")
        return 2
    model = build_model(parser, args.model, dict(args.model_arg), test.in_channels, test.num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        sys.stderr.write(f"{spec.name}: the weights in {args.checkpoint} do not fit --model {args.model} "
                         f"with --model-arg {dict(args.model_arg)}: {first}\n")  # fmt: skip
        return 1
    class_names = list(spec.class_names(args)) if spec.class_names is not None else None
    if three_d:
        from spatialrec.inference import evaluate_volumes
        from spatialrec.train.distributed import resolve_device

        summary = evaluate_volumes(model, test, args.patch_size, overlap=args.overlap, batch_size=args.sw_batch_size,
                                   device=resolve_device(args.device), class_names=class_names)  # fmt: skip
    else:
        summary = evaluate(model, test, batch_size=args.batch_size, device=args.device, amp=args.amp,
                           class_names=class_names, progress=not args.no_progress)  # fmt: skip
    mode = " (3D)" if three_d else ""
    print(f"{spec.name}{mode} / {args.model}: {args.checkpoint}")
    print(results_table(summary))
    if args.output is not None:
        from spatialrec.summary import json_safe

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
        print(f"summary: {args.output}")
    return 0
