"""``spatialrec demo``: what spatial recurrence is for, in about three minutes on a laptop CPU.

::

    spatialrec demo                 # writes runs/holistic_demo/
    spatialrec demo --epochs 1 --image-size 24 --num-train 16 --num-test 4   # a few seconds

The task (:class:`spatialrec.data.SyntheticLongRange`): each 48 x 48 image shows two objects of
two kinds (a disc and a square, each with its own grey level) in its lower half, and a stripe
along the top border whose grey level names the kind to segment. Whether an object is the target
is decided by pixels at least half the image away.

Two models of the same depth (two down-samplings) and about the same number of parameters are
trained on it with the same loop and settings:

- ``unet``: convolutions only. Its receptive field (about 23 pixels around a pixel) cannot reach
  the stripe from the objects, so the best it can do is mark both objects or guess a kind: test
  Dice about 0.5-0.67 however long it trains.
- ``sdn_unet``: the same U-Net with its deepest block (12 x 12) replaced by an SDN block whose
  GRU sweeps (right, then down) carry the stripe's grey level down to every object: test Dice
  close to 1.

Measured with the defaults on a 2-core CPU shared with another job: unet test Dice 0.653, sdn_unet
0.997, 137 s for the whole run.

It prints a table (parameters, training time, test Dice, HD95) and saves a figure with the input,
ground truth and both predictions for a few test images (``holistic_demo.png``) and a
``summary.json``. Checkpoints, per-epoch ``metrics.csv`` and ``metrics.json`` of each model go to
``<out>/<model>/``. The figure needs Pillow and the progress bars tqdm: ``pip install
'spatialrec[data]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import spatialrec
from spatialrec.analysis import prediction_rgb
from spatialrec.data import synthetic_splits
from spatialrec.losses import DiceCELoss
from spatialrec.train import fit

from ._args import check_device, check_progress, non_negative_int, positive_float, positive_int

PROG = "spatialrec demo"

# Same depth; widths chosen so that both have about the same number of parameters (~53k): the
# SDN block at level 2 has fewer weights than the two 3x3 convolutions it replaces, so the plain
# U-Net gets a slightly wider base.
MODELS: dict[str, dict[str, Any]] = {
    "unet": {"depth": 2, "base_width": 11},
    "sdn_unet": {"depth": 2, "base_width": 8, "state_size": 32, "encoder_sdn": (2,), "decoder_sdn": ()},
}
TARGET = {"sdn_unet": (">=", 0.90), "unet": ("<=", 0.75)}


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> argparse.Namespace:
    """The demo's flags; a bad value is a usage error (message and exit status 2)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/holistic_demo"), help="output folder")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of data, initialisation and order (default: 0)")
    p.add_argument("--epochs", type=positive_int, default=6, help="epochs per model (default: 6)")
    p.add_argument("--time-budget", type=positive_float, default=280.0,
                   help="seconds of training for both models together; each gets an equal share of what is "
                   "left and stops after the epoch that would overrun it (default: 280)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--image-size", type=positive_int, default=48, help="image side in pixels (default: 48)")
    p.add_argument("--num-train", type=positive_int, default=800, help="training images (default: 800)")
    p.add_argument("--num-val", type=positive_int, default=96, help="validation images (default: 96)")
    p.add_argument("--num-test", type=positive_int, default=96, help="test images (default: 96)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="default: 8")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--figure-images", type=non_negative_int, default=4, help="test images in the figure (default: 4)")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 unless sdn_unet Dice >= 0.90 and unet Dice <= 0.75")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default: 1; these small convolutions gain little from more, "
                   "and lose much when the cores are shared with other work)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    check_device(p, args.device)
    check_progress(p, not args.no_progress)
    try:
        import PIL  # noqa: F401
    except ImportError:
        p.error("the demo's figure needs Pillow: pip install 'spatialrec[data]'")
    return args


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device: str) -> torch.Tensor:
    """Binary masks ``(N, 1, H, W)`` for ``images: (N, 1, H, W)``."""
    model.eval()
    return (torch.sigmoid(model(images.to(device))) > 0.5).cpu()


def save_figure(path: Path, images: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor], dice: dict[str, list[float]]) -> None:
    """Grid with one row per image: input, ground truth, one column per model (Pillow only).

    Predictions are drawn white where they hit the ground truth, red where they mark pixels that
    are not in it and blue where they miss it.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError as err:
        raise ImportError("the figure needs Pillow: pip install 'spatialrec[data]'") from err
    n, _, h, w = images.shape
    scale, pad, header = 3, 6, 18
    cols = ["input", "ground truth", *preds]
    tile_w, tile_h = w * scale, h * scale
    footer = 30
    width = len(cols) * (tile_w + pad) + pad
    canvas = Image.new("RGB", (width, header + n * (tile_h + pad + 12) + pad + footer), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(cols):
        draw.text((pad + c * (tile_w + pad), 4), name, fill="black")
    for i in range(n):
        y = header + i * (tile_h + pad + 12)
        img = images[i, 0]
        lo, hi = float(img.min()), float(img.max())
        grey = ((img - lo) / max(hi - lo, 1e-6) * 255).clamp(0, 255).to(torch.uint8)
        tiles = [torch.stack([grey] * 3, dim=-1)]
        t = truth[i, 0].bool()
        tiles.append(torch.stack([t.to(torch.uint8) * 255] * 3, dim=-1))
        tiles += [prediction_rgb(preds[name][i, 0], t) for name in preds]
        for c, tile in enumerate(tiles):
            im = Image.fromarray(tile.numpy(), "RGB").resize((tile_w, tile_h), Image.Resampling.NEAREST)
            x = pad + c * (tile_w + pad)
            canvas.paste(im, (x, y))
            if c >= 2:
                draw.text((x, y + tile_h + 1), f"Dice {dice[cols[c]][i]:.2f}", fill="black")
    y = header + n * (tile_h + pad + 12) + 2
    draw.text((pad, y), "The grey level of the top stripe names the object to segment.", fill="black")
    draw.text((pad, y + 13), "Predictions: white = correct, red = false positive, blue = missed.", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Run the demo as the command line ``argv`` says (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or with ``--check`` 1 when a model misses its target.
    """
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    train, val, test = synthetic_splits(
        args.num_train, args.num_val, args.num_test, seed=args.seed, image_size=args.image_size
    )
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {}
    for i, (name, kwargs) in enumerate(MODELS.items()):
        # An equal share of what is left: time one model does not need goes to the next.
        spent = sum(r["train_time_s"] for r in results.values())
        budget = max(args.time_budget - spent, 1.0) / (len(MODELS) - i)
        torch.manual_seed(args.seed)
        model = spatialrec.create_model(name, in_channels=train.in_channels, num_classes=train.num_classes, **kwargs)
        params = sum(p.numel() for p in model.parameters())
        logging.info("== %s: %s parameters", name, f"{params:,}")
        res = fit(
            model, train, val, test_data=test, loss_fn=DiceCELoss(), epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
            out_dir=args.out / name, overwrite=True, time_budget=budget,
            progress=not args.no_progress, run_info={"example": "holistic_demo", "model": name, "model_args": kwargs},
        )  # fmt: skip
        tm = res.test_metrics or {}
        results[name] = {
            "parameters": params,
            "train_time_s": res.train_time,
            "epochs": res.epochs_completed,
            "stop_reason": res.stop_reason,
            "test_dice": tm["dice"]["mean"],
            "test_hd95": tm["hd95"]["mean"],
            "hd95_infinite": tm["hd95"]["infinite"],
            "per_image_dice": [r["dice"][0] for r in tm["per_case"]],
        }
        models[name] = model

    print(f"\n{'model':<10}{'params':>9}{'train time':>12}{'epochs':>8}{'test Dice':>11}{'HD95 (px)':>11}")
    for name, r in results.items():
        hd = "n/a" if r["test_hd95"] is None else f"{r['test_hd95']:.2f}"
        print(f"{name:<10}{r['parameters']:>9,}{r['train_time_s']:>11.0f}s{r['epochs']:>8}{r['test_dice']:>11.3f}{hd:>11}")
    print("(HD95 in pixels, averaged over the test images where it is finite; infinite, i.e. nothing "
          "predicted: " + ", ".join(f"{n} {r['hd95_infinite']}" for n, r in results.items()) + ")")  # fmt: skip

    k = min(args.figure_images, len(test))
    items = [test[i] for i in range(k)]
    images = torch.stack([it["image"] for it in items])
    truth = torch.stack([it["mask"] for it in items])
    preds = {name: predict(m, images, args.device) for name, m in models.items()}
    figure = args.out / "holistic_demo.png"
    save_figure(figure, images, truth, preds, {n: results[n]["per_image_dice"][:k] for n in results})

    total = time.perf_counter() - t_start
    met = {
        name: (results[name]["test_dice"] >= v) if op == ">=" else (results[name]["test_dice"] <= v)
        for name, (op, v) in TARGET.items()
    }
    summary = {
        "settings": {k2: (str(v) if isinstance(v, Path) else v) for k2, v in vars(args).items()},
        "models": {n: {k2: v for k2, v in r.items() if k2 != "per_image_dice"} for n, r in results.items()},
        "target": {n: f"test Dice {op} {v}" for n, (op, v) in TARGET.items()},
        "target_met": all(met.values()),
        "total_time_s": total,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nfigure: {figure}\nsummary: {args.out / 'summary.json'}\ntotal time: {total:.0f} s")
    verdict = "met" if all(met.values()) else "NOT met"
    print(f"target (sdn_unet Dice >= 0.90, unet Dice <= 0.75): {verdict}")
    return 1 if args.check and not all(met.values()) else 0

