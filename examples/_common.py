"""What the data-set examples share: command-line flags, data checks, model building, the run.

Each example (``dsb2018.py``, ``cvc_clinicdb.py``, ``lits.py``, ``segthor.py``) only says how to
build its three data sets and what its defaults are; :func:`main` does the rest:

1. parse the shared flags (``--data-dir --model --epochs --batch-size --lr --device --out
   --resume --seed`` and a few more, see ``--help``); a bad value (``--epochs -1``, an unknown
   ``--model`` or ``--device``, a ``--model-arg`` the model does not take) is a usage error:
   a message and exit status 2, before any data is read;
2. if ``--data-dir`` does not exist, print where to get the data and the layout expected, and
   exit with status 2;
3. build the train / validation / test sets (under ``torchrun``, rank 0 first, so that a
   preprocessing cache is written once), the model (``spatialrec.create_model``), and call
   :func:`spatialrec.train.fit`, which trains, tests the best weights and writes
   ``metrics.csv``, ``last.pt``, ``best.pt`` and ``metrics.json`` to ``--out``;
4. print the test metrics.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

import spatialrec
from spatialrec.train import CheckpointError, TrainingDivergedError, fit
from spatialrec.train import distributed as D


@dataclass
class ExampleSpec:
    """What makes one example: its name, data help and defaults, and how to build its data.

    Attributes:
        name: short name, used for the default output folder ``runs/<name>-<model>``.
        description: first line of ``--help``.
        where_to_get: where to download the data, printed when ``--data-dir`` is missing.
        layout: the folder layout the reader expects, printed with it.
        image_size: default ``--image-size`` (H, W).
        batch_size: default ``--batch-size`` (the published one, or a sane one).
        build: ``build(args, split, augment) -> Dataset`` for split ``"train" | "val" | "test"``.
        add_arguments: optional hook adding example-specific flags to the parser.
        class_names: names of the classes (for ``metrics.json``), or a function of ``args``.
    """

    name: str
    description: str
    where_to_get: str
    layout: str
    image_size: tuple[int, int]
    batch_size: int
    build: Callable[[argparse.Namespace, str, bool], Any]
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    class_names: "Optional[Callable[[argparse.Namespace], Sequence[str]]]" = None


def _model_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg expects KEY=VALUE (e.g. state_size=64), got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word such as residual_sdn
    return key.strip(), parsed


def _number(kind: type, low: float, low_inclusive: bool, high: Optional[float] = None, high_inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse ``type`` for a number in a range; a bad value is a usage error naming the range."""
    bounds = ("[" if low_inclusive else "(") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")"))
    what = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text!r}") from None
        ok = (value >= low if low_inclusive else value > low) and (
            high is None or (value <= high if high_inclusive else value < high)
        )
        if not ok or (kind is float and value != value):
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text}")
        return value

    return parse


positive_int = _number(int, 0, False)
non_negative_int = _number(int, 0, True)
positive_float = _number(float, 0.0, False)
fraction = _number(float, 0.0, True, 1.0, True)  # [0, 1]


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size expects H or HxW (e.g. 96x128), got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--image-size expects H or HxW with positive sizes, got {text!r}")
    return values[0], values[1]


def build_parser(spec: ExampleSpec) -> argparse.ArgumentParser:
    """The argument parser of an example: the shared flags, with the example's defaults."""
    p = argparse.ArgumentParser(
        description=f"{spec.description}\n\nData: {spec.where_to_get}\nLayout expected under --data-dir:\n{spec.layout}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding the data set (layout above)")
    p.add_argument("--model", default="sdn_unet", help="registered model name (default: sdn_unet); one of: "
                   + ", ".join(spatialrec.list_models()))  # fmt: skip
    p.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra argument for create_model, repeatable (e.g. --model-arg state_size=64)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=300, help="maximum epochs (default: 300, as in the paper)")
    p.add_argument("--batch-size", type=positive_int, default=spec.batch_size,
                   help=f"images per step per process (default: {spec.batch_size})")  # fmt: skip
    p.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate (default: 1e-4, as in the paper)")
    p.add_argument("--patience", type=positive_int, default=30, help="early-stopping patience in epochs (default: 30)")
    p.add_argument("--loss", choices=("dice", "dice_bce"), default="dice", help="training loss (default: dice)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, bf16/fp16 on CUDA)")
    p.add_argument("--image-size", type=_size, default=spec.image_size, metavar="HxW",
                   help=f"resize images to this size (default: {spec.image_size[0]}x{spec.image_size[1]})")  # fmt: skip
    p.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: runs/{spec.name}-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or stopped run in --out")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split, the initialisation and the data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    if spec.add_arguments is not None:
        spec.add_arguments(p)
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (``parser.error``: message, exit status 2) for values argparse cannot check alone.

    ``--model`` must be registered, ``--device`` must name a device here, and ``--model-arg``
    must be arguments the model accepts: checked by building the model on the ``meta`` device
    (no memory, no weights), before any data is read.
    """
    if args.model not in spatialrec.list_models():
        parser.error(f"--model {args.model!r} is not a registered model; choose one of: {', '.join(spatialrec.list_models())}")
    try:
        D.resolve_device(args.device)
    except (TypeError, ValueError) as err:
        parser.error(f"--device {args.device!r}: {err}")
    try:
        with torch.device("meta"):
            spatialrec.create_model(args.model, **dict(args.model_arg))
    except (TypeError, ValueError) as err:
        parser.error(f"--model-arg {' '.join(f'{k}={v!r}' for k, v in args.model_arg)} does not fit --model {args.model}: {err}")
    except Exception:  # a model that cannot be built on 'meta': checked when it is built for real
        pass


def build_model(parser: argparse.ArgumentParser, args: argparse.Namespace, in_channels: int, num_classes: int) -> torch.nn.Module:
    """``create_model`` with the command line's model and ``--model-arg``s; a bad one is a usage error."""
    try:
        return spatialrec.create_model(args.model, in_channels=in_channels, num_classes=num_classes, **dict(args.model_arg))
    except (TypeError, ValueError) as err:
        parser.error(f"--model {args.model} with --model-arg {dict(args.model_arg)}: {err}")


def data_help(spec: ExampleSpec, data_dir: Path) -> str:
    """The message printed when the data folder is missing."""
    return (
        f"{spec.name}: data folder {str(data_dir)!r} not found.\n"
        f"Get the data: {spec.where_to_get}\n"
        f"Expected layout under --data-dir:\n{spec.layout}\n"
    )


def _loss(name: str) -> Any:
    from spatialrec import losses

    return losses.DiceLoss() if name == "dice" else losses.DiceCELoss()


def main(spec: ExampleSpec, argv: Optional[Sequence[str]] = None) -> int:
    """Run an example: parse ``argv``, build data and model, train, test, print. Returns the exit status."""
    parser = build_parser(spec)
    args = parser.parse_args(argv)
    check_args(parser, args)
    if not args.data_dir.is_dir():
        sys.stderr.write(data_help(spec, args.data_dir))
        return 2
    ctx = D.setup(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s")
    out = args.out if args.out is not None else Path("runs") / f"{spec.name}-{args.model}"

    # Rank 0 builds first so that readers with a preprocessing cache (LiTS, SegTHOR) fill it once.
    datasets: dict[str, Any] = {}
    for turn in ("main", "others"):
        if (turn == "main") == ctx.is_main:
            try:
                datasets = {split: spec.build(args, split, split == "train" and not args.no_augment)
                            for split in ("train", "val", "test")}  # fmt: skip
            except (FileNotFoundError, ValueError) as err:  # the readers' DatasetError is a ValueError
                sys.stderr.write(f"{spec.name}: cannot read the data in {str(args.data_dir)!r}:\n{err}\n")
                sys.stderr.write(data_help(spec, args.data_dir).split("\n", 1)[1])
                return 2
        D.barrier(ctx)
    train, val, test = datasets["train"], datasets["val"], datasets["test"]

    torch.manual_seed(args.seed)  # the same initial weights in every process
    overrides = dict(args.model_arg)
    model = build_model(parser, args, train.in_channels, train.num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logging.info("%s: %s with %s parameters; %d / %d / %d train / val / test images", spec.name, args.model,
                 f"{n_params:,}", len(train), len(val), len(test))  # fmt: skip
    class_names = spec.class_names(args) if spec.class_names is not None else None
    try:
        result = fit(
            model, train, val, test_data=test, loss_fn=_loss(args.loss), epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, patience=args.patience, amp=args.amp, device=args.device,
            seed=args.seed, out_dir=out, resume=args.resume, overwrite=args.overwrite,
            num_workers=args.num_workers, progress=not args.no_progress, class_names=class_names,
            run_info={"example": spec.name, "model": args.model, "model_args": overrides,
                      "image_size": list(args.image_size), "data_dir": str(args.data_dir)},
        )  # fmt: skip
    except (TrainingDivergedError, CheckpointError, FileExistsError) as err:
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    except FileNotFoundError as err:  # --resume without a checkpoint
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    if ctx.is_main and result.test_metrics is not None:
        print(f"\n{spec.name} / {args.model}: {result.epochs_completed} epochs ({result.stop_reason}), "
              f"best epoch {result.best_epoch}, {result.train_time:.0f} s")  # fmt: skip
        print(results_table(result.test_metrics))
        print(f"metrics: {out / 'metrics.json'}")
    return 0


def results_table(summary: dict[str, Any]) -> str:
    """The test summary (format of :mod:`spatialrec.summary`) as a table: mean ± std per class and
    overall, and how many cases had an infinite HD95 (a structure missed or hallucinated)."""
    from spatialrec.summary import format_table

    kind = "volumes" if summary["case_kind"] == "volume" else "images"
    return f"{summary['num_cases']} test {kind}\n" + format_table(summary)
