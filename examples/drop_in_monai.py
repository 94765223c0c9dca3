"""Drop spatial recurrence into a MONAI BasicUNet without losing what it has learned.

1. Train a plain MONAI ``BasicUNet`` for ``--pretrain-steps`` on the synthetic long-range task
   (it stands in for your pretrained network).
2. ``spatialrec.add_spatial_recurrence`` replaces the convolutions matched by ``--select`` by
   ``ResidualSDN`` layers; the script checks, in eval mode, that the converted network computes
   what the original computed (max abs difference, must be <= 1e-5).
3. Fine-tune for ``--steps``: the first ``--freeze-steps`` train only the new layers
   (``freeze_except_sdn``), the rest train everything. As a control, a copy of the plain network
   is fine-tuned for the same number of steps (skip with ``--no-control``).
4. Print the validation Dice of each stage.

Run: ``python examples/drop_in_monai.py --steps 20 --seed 0`` (one to two minutes on a 2-core CPU). ``examples/drop_in_smp.py`` does the same with segmentation_models_pytorch and
imports the helpers below.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from spatialrec import add_spatial_recurrence, freeze_except_sdn, sdn_modules


# --------------------------------------------------------------------------------------------
# DATA, LOSS AND METRIC HOOK: the only place where the data set, the loss and the metric come from.
# They are spatialrec.data.SyntheticLongRange, spatialrec.losses.soft_dice_loss and
# spatialrec.metrics.dice (issue 5); switch data sets here.
# --------------------------------------------------------------------------------------------
def load_data(image_size: int, num_train: int, num_val: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The synthetic long-range task as tensors.

    Returns ``(train_images, train_masks, val_images, val_masks)``, images ``(N, 1, H, W)``
    float32, masks ``(N, 1, H, W)`` 0/1 float32 (one foreground class).
    """
    from spatialrec.data import SyntheticLongRange

    out = []
    for split, n in (("train", num_train), ("val", num_val)):
        ds = SyntheticLongRange(num_samples=n, image_size=image_size, split=split, seed=seed)
        items = [ds[i] for i in range(len(ds))]
        out += [torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items])]
    return tuple(out)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Sigmoid soft Dice loss, ``logits, masks: (B, 1, H, W)`` -> scalar."""
    from spatialrec.losses import soft_dice_loss

    return soft_dice_loss(logits, masks)


def dice_score(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean Dice of ``sigmoid(logits) > 0.5`` against ``masks``, both ``(B, 1, H, W)``."""
    from spatialrec.metrics import dice

    return dice((torch.sigmoid(logits) > 0.5).float(), masks).mean().item()


# --------------------------------------------------------------------------------------------


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def common_arguments(description: str, select_default: str, steps: int = 20) -> argparse.ArgumentParser:
    """The command line shared by the drop-in examples."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=steps, help="fine-tuning steps after the conversion")
    p.add_argument("--pretrain-steps", type=int, default=60, help="steps that train the plain network first")
    p.add_argument("--freeze-steps", type=int, default=None,
                   help="first fine-tuning steps with only the new layers trainable (default: steps // 2)")
    p.add_argument("--select", default=select_default,
                   help="glob pattern on module names of the convolutions to convert")
    p.add_argument("--state-size", type=int, default=16, help="state size S of each new SDN layer")
    p.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--num-train", type=int, default=128, help="synthetic training images")
    p.add_argument("--num-val", type=int, default=32, help="synthetic validation images")
    p.add_argument("--no-control", action="store_true", help="skip fine-tuning the plain network as a control")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    return p  # fmt: skip


def evaluate(model: nn.Module, data: Data, device: torch.device, batch: int = 32) -> tuple[float, torch.Tensor]:
    """Validation Dice and logits ``(N, 1, H, W)`` (on the CPU), in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(data.val_x[i : i + batch].to(device)).cpu() for i in range(0, len(data.val_x), batch)])
    return dice_score(logits, data.val_y), logits


def train(model: nn.Module, data: Data, steps: int, args: argparse.Namespace, device: torch.device,
          seed: int, freeze_steps: int = 0) -> None:  # fmt: skip
    """``steps`` Adam steps on random batches; the first ``freeze_steps`` train only SDN layers."""
    if steps <= 0:
        return
    gen = torch.Generator().manual_seed(seed)
    model.train()
    if freeze_steps > 0:
        freeze_except_sdn(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    for step in range(steps):
        if step == freeze_steps and freeze_steps > 0:
            model.requires_grad_(True)
            opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        idx = torch.randint(len(data.train_x), (args.batch_size,), generator=gen)
        loss = segmentation_loss(model(data.train_x[idx].to(device)), data.train_y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0 or (step + 1) % max(1, steps // 4) == 0 or step + 1 == steps:
            print(f"    step {step + 1:4d}/{steps}  loss {loss.item():.4f}")


def run_drop_in(build: Callable[[], nn.Module], args: argparse.Namespace, name: str) -> dict[str, float]:
    """The whole demonstration for one network family; returns the Dice of each stage."""
    for flag in ("steps", "pretrain_steps", "state_size", "batch_size", "num_train", "num_val"):
        if getattr(args, flag) < (1 if flag in ("state_size", "batch_size", "num_train", "num_val") else 0):
            raise SystemExit(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    data = Data(*load_data(args.image_size, args.num_train, args.num_val, args.seed))
    results: dict[str, float] = {}

    model = build().to(device)
    t0 = time.perf_counter()
    print(f"[1] training the plain {name} for {args.pretrain_steps} steps (stands in for a pretrained one)")
    train(model, data, args.pretrain_steps, args, device, seed=args.seed)
    results["plain"], plain_logits = evaluate(model, data, device)
    control = copy.deepcopy(model)

    print(f"[2] converting the convolutions matching {args.select!r}")
    names = add_spatial_recurrence(model, args.select, state_size=args.state_size)
    print(f"    replaced {len(names)}: {', '.join(names)}")
    results["converted_at_init"], conv_logits = evaluate(model, data, device)
    diff = (conv_logits - plain_logits).abs().max().item()
    print(f"    max abs difference of the logits at initialisation (eval mode): {diff:.3g}")
    if diff > 1e-5:
        raise RuntimeError(f"converted model differs from the original by {diff} at initialisation")
    new_params = sum(p.numel() for layer in sdn_modules(model).values() for p in layer.sdn.parameters())
    print(f"    new parameters: {new_params}")

    freeze = args.steps // 2 if args.freeze_steps is None else args.freeze_steps
    print(f"[3] fine-tuning the converted network: {args.steps} steps, the first {freeze} with only the new layers")
    train(model, data, args.steps, args, device, seed=args.seed + 1, freeze_steps=freeze)
    results["converted_after"], _ = evaluate(model, data, device)
    if not args.no_control:
        print(f"    control: fine-tuning the plain network for the same {args.steps} steps")
        train(control, data, args.steps, args, device, seed=args.seed + 1)
        results["plain_after"], _ = evaluate(control, data, device)

    print(f"[4] validation Dice ({len(data.val_x)} images, {time.perf_counter() - t0:.0f} s):")
    print(f"    plain network, before conversion:   {results['plain']:.4f}")
    print(f"    converted, at initialisation:        {results['converted_at_init']:.4f}")
    print(f"    converted, after fine-tuning:        {results['converted_after']:.4f}")
    if "plain_after" in results:
        print(f"    plain network, same fine-tuning:     {results['plain_after']:.4f}  (control)")
    return results


def build_basic_unet(image_size: int) -> nn.Module:
    """A small MONAI BasicUNet, 1 input channel, 1 output channel (logits)."""
    if image_size % 16:
        raise SystemExit(f"--image-size must be a multiple of 16 for BasicUNet (4 halvings), got {image_size}")
    try:
        from monai.networks.nets import BasicUNet
    except ImportError as err:
        raise ImportError("this example needs MONAI: pip install 'spatialrec[interop]'") from err
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 8, 16, 16, 32, 8))


def main() -> None:
    parser = common_arguments(
        __doc__.splitlines()[0],
        # The second convolution of each block at 1/2 and 1/4 resolution, on the way down and up:
        # long-range context where the sweeps are short.
        select_default="*_[23].convs.conv_1.conv",
    )
    args = parser.parse_args()
    run_drop_in(lambda: build_basic_unet(args.image_size), args, "MONAI BasicUNet")


if __name__ == "__main__":
    main()
