"""The ``--3d`` mode of the CT examples (``lits.py``, ``segthor.py``): patch-based 3D training and
volume-level testing.

1. the example's own reader builds each split (same splits, HU window and cache as the 2D
   mode; ``--image-size`` resizes the slices in-plane), and
   :class:`~spatialrec.data.volumes3d.CTVolumes` reads its volumes whole;
2. training and validation use random ``--patch-size`` patches
   (:class:`~spatialrec.data.patches3d.RandomPatchDataset3d`, ``--samples-per-volume`` per volume,
   ``--fg-ratio`` of them centred on the target); the training patches are redrawn every epoch,
   the validation patches are fixed;
3. :func:`spatialrec.train.fit` trains a 3D model (default ``sdn_unet3d``) with early stopping on
   the validation loss and writes its checkpoints and ``metrics.csv`` to ``--out``;
4. the best weights are tested on whole test volumes by sliding-window inference
   (:func:`spatialrec.inference.evaluate_volumes`, ``--overlap``, Gaussian blending): Dice, IoU
   and HD95 in millimetres (each volume's slice spacing and in-plane pixel size), summarised in
   the same format as the 2D test in ``metrics.json`` (:mod:`spatialrec.summary`), written to
   ``metrics3d.json`` and printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from spatialrec.summary import json_safe
from spatialrec.train import CheckpointError, TrainingDivergedError, fit
from spatialrec.train import distributed as D

THREE_D_FLAG = "--3d"


def _size3(text: str) -> tuple[int, int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DxHxW or one int, got {text!r}") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected DxHxW (three positive ints) or one int, got {text!r}")
    return parts[0], parts[1], parts[2]


def add_3d_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--3d`` flag and the flags of the 3D mode (ignored without ``--3d``)."""
    g = p.add_argument_group("3D mode (--3d): patch-based training on whole volumes, sliding-window testing")
    g.add_argument(THREE_D_FLAG, dest="three_d", action="store_true",
                   help="train a 3D model on volume patches and test whole volumes (default model: sdn_unet3d)")  # fmt: skip
    g.add_argument("--patch-size", type=_size3, default=(32, 64, 64), metavar="DxHxW",
                   help="training and inference patch (default: 32x64x64)")  # fmt: skip
    from _common import _number, fraction, positive_int  # the examples folder is on sys.path

    g.add_argument("--samples-per-volume", type=positive_int, default=4, help="patches per volume per epoch (default: 4)")
    g.add_argument("--fg-ratio", type=fraction, default=0.5,
                   help="fraction of patches centred on the target (default: 0.5)")  # fmt: skip
    g.add_argument("--overlap", type=_number(float, 0.0, True, 1.0, False), default=0.5,
                   help="sliding-window overlap at test time, in [0, 1) (default: 0.5)")  # fmt: skip
    g.add_argument("--sw-batch-size", type=positive_int, default=1, help="windows per forward pass at test time (default: 1)")


def wants_3d(argv: Sequence[str]) -> bool:
    """Whether the command line asks for the 3D mode."""
    return THREE_D_FLAG in argv


def _completed_epochs(out: Path) -> int:
    """Epochs already in ``out/metrics.csv`` (for resuming with the same patches per epoch)."""
    csv = out / "metrics.csv"
    if not csv.is_file():
        return 0
    return max(0, sum(1 for line in csv.read_text().splitlines() if line.strip()) - 1)


def main3d(spec: Any, argv: Optional[Sequence[str]] = None) -> int:
    """Run an example in 3D mode: parse ``argv``, build volumes and patches, train, test whole volumes."""
    from _common import build_model, build_parser, check_args, data_help, results_table  # examples folder on sys.path

    from spatialrec.data.patches3d import RandomPatchDataset3d
    from spatialrec.data.volumes3d import CTVolumes
    from spatialrec.inference import evaluate_volumes

    parser = build_parser(spec)
    # 3D defaults: a 3D model, two patches per step, in-plane slices at half the 2D size.
    parser.set_defaults(model="sdn_unet3d", batch_size=2,
                        image_size=(spec.image_size[0] // 2, spec.image_size[1] // 2))  # fmt: skip
    args = parser.parse_args(argv)
    check_args(parser, args)
    if not args.data_dir.is_dir():
        sys.stderr.write(data_help(spec, args.data_dir))
        return 2
    if hasattr(args, "slice_filter"):
        args.slice_filter = "all"  # whole volumes: every slice
    ctx = D.setup(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING, format="%(message)s")
    out = args.out if args.out is not None else Path("runs") / f"{spec.name}-{args.model}"

    volumes: dict[str, Any] = {}
    for turn in ("main", "others"):
        if (turn == "main") == ctx.is_main:
            try:
                volumes = {split: CTVolumes(spec.build(args, split, False)) for split in ("train", "val", "test")}
            except (FileNotFoundError, ValueError) as err:
                sys.stderr.write(f"{spec.name}: cannot read the data in {str(args.data_dir)!r}:\n{err}\n")
                sys.stderr.write(data_help(spec, args.data_dir).split("\n", 1)[1])
                return 2
        D.barrier(ctx)
    patch = args.patch_size
    train = RandomPatchDataset3d(volumes["train"], patch, args.samples_per_volume, args.fg_ratio, seed=args.seed)
    val = RandomPatchDataset3d(volumes["val"], patch, args.samples_per_volume, args.fg_ratio, seed=args.seed + 1)
    if args.resume:
        train.set_epoch(_completed_epochs(out))

    torch.manual_seed(args.seed)
    overrides = dict(args.model_arg)
    model = build_model(parser, args, train.in_channels, train.num_classes)
    n_params = sum(p.numel() for p in model.parameters())
    logging.info("%s (3D): %s with %s parameters; %d / %d / %d train / val / test volumes, patches %s",
                 spec.name, args.model, f"{n_params:,}", len(volumes["train"]), len(volumes["val"]),
                 len(volumes["test"]), "x".join(map(str, patch)))  # fmt: skip
    class_names = list(spec.class_names(args)) if spec.class_names is not None else None
    from _common import _loss

    def next_epoch(row: dict[str, float]) -> None:
        train.set_epoch(int(row["epoch"]))  # fit counts epochs from 1: epoch k+1 draws set k

    try:
        result = fit(
            model, train, val, loss_fn=_loss(args.loss), epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, patience=args.patience, amp=args.amp, device=args.device, seed=args.seed, out_dir=out,
            resume=args.resume, overwrite=args.overwrite, num_workers=args.num_workers,
            progress=not args.no_progress, class_names=class_names, on_epoch_end=next_epoch,
            run_info={"example": spec.name, "mode": "3d", "model": args.model, "model_args": overrides,
                      "image_size": list(args.image_size), "patch_size": list(patch), "data_dir": str(args.data_dir)},
        )  # fmt: skip
    except (TrainingDivergedError, CheckpointError, FileExistsError, FileNotFoundError) as err:
        sys.stderr.write(f"{spec.name}: {err}\n")
        return 1
    if not ctx.is_main:
        return 0
    device = next(model.parameters()).device
    metrics = evaluate_volumes(
        model, volumes["test"], patch, overlap=args.overlap, batch_size=args.sw_batch_size, device=device,
        class_names=class_names,
    )  # fmt: skip
    (out / "metrics3d.json").write_text(json.dumps(json_safe(metrics), indent=2))
    print(f"\n{spec.name} (3D) / {args.model}: {result.epochs_completed} epochs ({result.stop_reason}), "
          f"best epoch {result.best_epoch}, {result.train_time:.0f} s")  # fmt: skip
    print(results_table(metrics))
    print(f"metrics: {out / 'metrics3d.json'}")
    return 0
