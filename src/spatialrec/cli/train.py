"""``spatialrec train``: train and test a model on DSB2018, CVC-ClinicDB, LiTS or SegTHOR.

::

    spatialrec train --dataset dsb2018 --data-dir data/stage1_train --model sdn_unet --out runs/dsb-sdn
    spatialrec train --dataset lits --data-dir data/LiTS --3d          # patches of whole CT volumes

What a run does (the same for every data set; :mod:`spatialrec.cli.datasets` holds what differs):

1. parse the shared flags (``--data-dir --model --epochs --batch-size --lr --device --out
   --resume --seed`` and a few more, see ``--help``) and the data set's own; a bad value
   (``--epochs -1``, an unknown ``--model`` or ``--device``, a ``--model-arg`` the model does
   not take) is a usage error: a one-line message and exit status 2, before any data is read;
2. if ``--data-dir`` does not exist, print where to get the data and the layout expected, and
   exit with status 2;
3. build the train / validation / test sets (under ``torchrun``, rank 0 first, so that a
   preprocessing cache is written once), the model (:func:`spatialrec.create_model`), and call
   :func:`spatialrec.train.fit`, which trains, tests the best weights and writes
   ``metrics.csv``, ``last.pt``, ``best.pt`` and ``metrics.json`` to ``--out`` (the run folder;
   ``--resume`` continues it);
4. print the test metrics.

With ``--3d`` (LiTS, SegTHOR) the reader's volumes are read whole
(:class:`~spatialrec.data.volumes3d.CTVolumes`), a 3D model (default ``sdn_unet3d``) trains on
random ``--patch-size`` patches (:class:`~spatialrec.data.patches3d.RandomPatchDataset3d`,
redrawn every epoch) and the best weights are tested on whole test volumes by sliding windows
(:func:`spatialrec.inference.evaluate_volumes`), HD95 in millimetres, written to
``metrics3d.json``.

The ``examples/`` scripts of the repository call :func:`run` with one of the data sets.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ._args import (
    build_model,
    check_device,
    check_model,
    check_progress,
    model_arg,
    non_negative_int,
    positive_float,
    positive_int,
    results_table,
    sizes,
)
from .datasets import DATASETS, DatasetSpec

PROG = "spatialrec train"


def add_model_arguments(p: argparse.ArgumentParser, default_model: Optional[str]) -> None:
    """``--model`` and ``--model-arg`` (shared with ``spatialrec evaluate``)."""
    import spatialrec

    shown = f"default: {default_model}" if default_model else "default: the one recorded beside --checkpoint"
    p.add_argument("--model", default=default_model,
                   help=f"registered model name ({shown}); one of: " + ", ".join(spatialrec.list_models()))  # fmt: skip
    p.add_argument("--model-arg", type=model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra argument for create_model, repeatable (e.g. --model-arg state_size=64)")  # fmt: skip


def _dataset_flag(p: argparse.ArgumentParser, spec: Optional[DatasetSpec]) -> None:
    p.add_argument("--dataset", choices=tuple(DATASETS), required=spec is None, default=spec.name if spec else None,
                   help="the data set; `--dataset NAME --help` lists its own flags")  # fmt: skip


def build_parser(spec: Optional[DatasetSpec], prog: str = PROG, dataset_flag: bool = True) -> argparse.ArgumentParser:
    """The parser of a training run: the shared flags with ``spec``'s defaults, and ``spec``'s own.

    ``spec=None`` gives the parser shown by ``spatialrec train --help`` before a data set is
    chosen. ``dataset_flag=False`` leaves ``--dataset`` out (the examples, which have one data set).
    """
    if spec is None:
        description = "Train and test a segmentation model on one of the public data sets: " + ", ".join(DATASETS) + "."
    else:
        description = f"{spec.description}\n\nData: {spec.where_to_get}\nLayout expected under --data-dir:\n{spec.layout}"
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if dataset_flag:
        _dataset_flag(p, spec)
    size, batch = (spec.image_size, spec.batch_size) if spec else ((96, 96), 8)
    name = spec.name if spec else "<dataset>"
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding the data set (layout above)")
    add_model_arguments(p, "sdn_unet")
    p.add_argument("--epochs", type=positive_int, default=300, help="maximum epochs (default: 300, as in the paper)")
    p.add_argument("--batch-size", type=positive_int, default=batch, help=f"images per step per process (default: {batch})")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate (default: 1e-4, as in the paper)")
    p.add_argument("--patience", type=positive_int, default=30, help="early-stopping patience in epochs (default: 30)")
    p.add_argument("--loss", choices=("dice", "dice_bce"), default="dice", help="training loss (default: dice)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, bf16/fp16 on CUDA)")
    p.add_argument("--image-size", type=sizes(2, "--image-size"), default=size, metavar="HxW",
                   help=f"resize images to this size (default: {size[0]}x{size[1]})")  # fmt: skip
    p.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder, the run folder (default: runs/{name}-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or stopped run in --out")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split, the initialisation and the data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    if spec is not None and spec.add_arguments is not None:
        spec.add_arguments(p)
    return p


def dataset_arguments(spec: DatasetSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``spec``'s own flags in ``args``, JSON-able (recorded in ``metrics.json``)."""
    if spec.add_arguments is None:
        return {}
    own = argparse.ArgumentParser(add_help=False)
    spec.add_arguments(own)
    values = {k: getattr(args, k) for k in vars(own.parse_args([]))}
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _loss(name: str) -> Any:
    from spatialrec import losses

    return losses.DiceLoss() if name == "dice" else losses.DiceCELoss()


def _checked(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    check_model(parser, args.model, dict(args.model_arg))
    check_device(parser, args.device)
    check_progress(parser, not args.no_progress)
    return args


def _build_splits(spec: DatasetSpec, args: argparse.Namespace, ctx: Any, make: Any) -> Optional[dict[str, Any]]:
    """``make(split)`` for the three splits, rank 0 first (readers with a cache fill it once);
    ``None`` after reporting data that cannot be read."""
    from spatialrec.train import distributed as D

    datasets: dict[str, Any] = {}
    for turn in ("main", "others"):
        if (turn == "main") == ctx.is_main:
            try:
                datasets = {split: make(split) for split in ("train", "val", "test")}
            except (FileNotFoundError, ValueError) as err:  # the readers' DatasetError is a ValueError
                sys.stderr.write(f"{spec.name}: cannot read the data in {str(args.data_dir)!r}:\n{err}\n")
                sys.stderr.write(spec.data_help(args.data_dir).split("\n", 1)[1])
                return None
        D.barrier(ctx)
    return datasets


def train_2d(spec: DatasetSpec, argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """The 2D run of ``spec`` (images or CT slices): parse, build data and model, train, test, print.

    Returns:
        The exit status: 0 done, 1 the run failed (diverged, damaged checkpoint, folder in use),
        2 a usage error or data that cannot be found or read.
    """
    from spatialrec.train import CheckpointError, TrainingDivergedError, fit
    from spatialrec.train import distributed as D

    parser = parser or build_parser(spec, dataset_flag=False)
    args = _checked(parser, list(sys.argv[1:] if argv is None else argv))
    if not args.data_dir.is_dir():
        sys.stderr.write(spec.data_help(args.data_dir))
        return 2
    ctx = D.setup(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s")
    out = args.out if args.out is not None else Path("runs") / f"{spec.name}-{args.model}"
    datasets = _build_splits(spec, args, ctx, lambda split: spec.build(args, split, split == "train" and not args.no_augment))
    if datasets is None:
        return 2
    train, val, test = datasets["train"], datasets["val"], datasets["test"]

    torch.manual_seed(args.seed)  # the same initial weights in every process
    overrides = dict(args.model_arg)
    model = build_model(parser, args.model, overrides, train.in_channels, train.num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logging.info("%s: %s with %s parameters; %d / %d / %d train / val / test images", spec.name, args.model,
                 f"{n_params:,}", len(train), len(val), len(test))  # fmt: skip
    class_names = list(spec.class_names(args)) if spec.class_names is not None else None
    try:
        result = fit(
            model, train, val, test_data=test, loss_fn=_loss(args.loss), epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, patience=args.patience, amp=args.amp, device=args.device,
            seed=args.seed, out_dir=out, resume=args.resume, overwrite=args.overwrite,
            num_workers=args.num_workers, progress=not args.no_progress, class_names=class_names,
            run_info={"example": spec.name, "dataset": spec.name, "model": args.model, "model_args": overrides,
                      "image_size": list(args.image_size), "data_dir": str(args.data_dir),
                      "dataset_args": dataset_arguments(spec, args)},
        )  # fmt: skip
    except (TrainingDivergedError, CheckpointError, FileExistsError, FileNotFoundError) as err:
        # FileNotFoundError: --resume without a checkpoint
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    if ctx.is_main and result.test_metrics is not None:
        print(f"\n{spec.name} / {args.model}: {result.epochs_completed} epochs ({result.stop_reason}), "
              f"best epoch {result.best_epoch}, {result.train_time:.0f} s")  # fmt: skip
        print(results_table(result.test_metrics))
        print(f"metrics: {out / 'metrics.json'}")
    return 0


def _completed_epochs(out: Path) -> int:
    """Epochs already in ``out/metrics.csv`` (for resuming with the same patches per epoch)."""
    csv = out / "metrics.csv"
    if not csv.is_file():
        return 0
    return max(0, sum(1 for line in csv.read_text().splitlines() if line.strip()) - 1)


def set_3d_defaults(parser: argparse.ArgumentParser, spec: DatasetSpec) -> None:
    """3D defaults: a 3D model, two patches per step, in-plane slices at half the 2D size."""
    parser.set_defaults(model="sdn_unet3d", batch_size=2, image_size=(spec.image_size[0] // 2, spec.image_size[1] // 2))


def train_3d(spec: DatasetSpec, argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """The ``--3d`` run of a CT data set: volumes, patch training, sliding-window test of whole volumes.

    Returns:
        The exit status, as :func:`train_2d`.
    """
    from spatialrec.data.patches3d import RandomPatchDataset3d
    from spatialrec.data.volumes3d import CTVolumes
    from spatialrec.inference import evaluate_volumes
    from spatialrec.summary import json_safe
    from spatialrec.train import CheckpointError, TrainingDivergedError, fit
    from spatialrec.train import distributed as D

    parser = parser or build_parser(spec, dataset_flag=False)
    set_3d_defaults(parser, spec)
    args = _checked(parser, list(sys.argv[1:] if argv is None else argv))
    if not args.data_dir.is_dir():
        sys.stderr.write(spec.data_help(args.data_dir))
        return 2
    if hasattr(args, "slice_filter"):
        args.slice_filter = "all"  # whole volumes: every slice
    ctx = D.setup(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s")
    out = args.out if args.out is not None else Path("runs") / f"{spec.name}-{args.model}"
    volumes = _build_splits(spec, args, ctx, lambda split: CTVolumes(spec.build(args, split, False)))
    if volumes is None:
        return 2
    patch = args.patch_size
    train = RandomPatchDataset3d(volumes["train"], patch, args.samples_per_volume, args.fg_ratio, seed=args.seed)
    val = RandomPatchDataset3d(volumes["val"], patch, args.samples_per_volume, args.fg_ratio, seed=args.seed + 1)
    if args.resume:
        train.set_epoch(_completed_epochs(out))

    torch.manual_seed(args.seed)
    overrides = dict(args.model_arg)
    model = build_model(parser, args.model, overrides, train.in_channels, train.num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logging.info("%s (3D): %s with %s parameters; %d / %d / %d train / val / test volumes, patches %s",
                 spec.name, args.model, f"{n_params:,}", len(volumes["train"]), len(volumes["val"]),
                 len(volumes["test"]), "x".join(map(str, patch)))  # fmt: skip
    class_names = list(spec.class_names(args)) if spec.class_names is not None else None

    def next_epoch(row: dict[str, float]) -> None:
        train.set_epoch(int(row["epoch"]))  # fit counts epochs from 1: epoch k+1 draws set k

    try:
        result = fit(
            model, train, val, loss_fn=_loss(args.loss), epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, patience=args.patience, amp=args.amp, device=args.device, seed=args.seed, out_dir=out,
            resume=args.resume, overwrite=args.overwrite, num_workers=args.num_workers,
            progress=not args.no_progress, class_names=class_names, on_epoch_end=next_epoch,
            run_info={"example": spec.name, "dataset": spec.name, "mode": "3d", "model": args.model,
                      "model_args": overrides, "image_size": list(args.image_size), "patch_size": list(patch),
                      "data_dir": str(args.data_dir), "dataset_args": dataset_arguments(spec, args)},
        )  # fmt: skip
    except (TrainingDivergedError, CheckpointError, FileExistsError, FileNotFoundError) as err:
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    if not ctx.is_main:
        return 0
    device = next(model.parameters()).device
    metrics = evaluate_volumes(model, volumes["test"], patch, overlap=args.overlap, batch_size=args.sw_batch_size,
                               device=device, class_names=class_names)  # fmt: skip
    (out / "metrics3d.json").write_text(json.dumps(json_safe(metrics), indent=2))
    print(f"\n{spec.name} (3D) / {args.model}: {result.epochs_completed} epochs ({result.stop_reason}), "
          f"best epoch {result.best_epoch}, {result.train_time:.0f} s")  # fmt: skip
    print(results_table(metrics))
    print(f"metrics: {out / 'metrics3d.json'}")
    return 0


def wants_3d(argv: Sequence[str]) -> bool:
    """Whether the command line asks for the 3D mode."""
    return "--3d" in argv


def run(spec: DatasetSpec, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Train on ``spec``'s data set as the command line ``argv`` says: 2D, or 3D with ``--3d``.

    This is what the repository's ``examples/<dataset>.py`` scripts call (no ``--dataset`` flag).

    Returns:
        The exit status (see :func:`train_2d`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(spec, prog=prog or f"{Path(sys.argv[0]).name}", dataset_flag=False)
    return train_3d(spec, args, parser) if spec.volumetric and wants_3d(args) else train_2d(spec, args, parser)


def chosen_dataset(argv: Sequence[str]) -> Optional[str]:
    """The value of ``--dataset`` in ``argv`` (``--dataset X`` or ``--dataset=X``), if any."""
    for i, a in enumerate(argv):
        if a == "--dataset" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--dataset="):
            return a.split("=", 1)[1]
    return None


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """``spatialrec train``: the data set named by ``--dataset``, then as :func:`run`.

    Returns:
        The exit status (see :func:`train_2d`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = chosen_dataset(args)
    if name not in DATASETS:  # --help, or --dataset missing or unknown: argparse says so (exit 0 or 2)
        build_parser(None, prog).parse_args(args)
        return 2  # not reached: without a valid --dataset, --data-dir or --dataset is reported missing
    spec = DATASETS[name]
    parser = build_parser(spec, prog)
    return train_3d(spec, args, parser) if spec.volumetric and wants_3d(args) else train_2d(spec, args, parser)
