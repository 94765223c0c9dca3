"""One training epoch and one validation pass of :func:`~spatialrec.train.fit`, and their helpers.

:func:`train_epoch` takes the optimiser steps of one epoch: forward (under autocast when asked),
loss, a finiteness check agreed by all processes (so that every process stops at the same step
and none waits forever), backward, optional gradient clipping, step. :func:`validate` computes
the mean loss and the mean per-image Dice over the whole validation set. Both sum their figures
over processes, so every process returns the same numbers.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import metrics as M
from . import distributed as D
from .config import LossFn
from .errors import NonFiniteLossError


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(
    data: Dataset, sampler: D.ShardedEpochSampler, batch_size: int, num_workers: int, device: torch.device, drop_last: bool
) -> DataLoader:
    """A DataLoader over ``sampler``'s indices with its own generator (reseeded by the caller)."""
    # Its own generator, reseeded each epoch, so that worker seeds do not draw on global RNG.
    return DataLoader(
        data, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=device.type == "cuda",
        drop_last=drop_last, generator=torch.Generator(),
    )  # fmt: skip


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_to(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, mask)`` of a collated batch, float32 on ``device``."""
    nb = device.type == "cuda"
    return batch["image"].to(device, non_blocking=nb).float(), batch["mask"].to(device, non_blocking=nb).float()


def check_output(logits: object, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` if it is a tensor shaped like ``mask`` ``(B, K, ...)``; else an error saying why not."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model must return a logits tensor (B, K, H, W), got {type(logits).__name__}")
    if logits.shape != mask.shape:
        raise ValueError(
            f"the model output has shape {tuple(logits.shape)} but the masks have shape {tuple(mask.shape)}; "
            "the model's num_classes must equal the data set's num_classes (K) and the output the input size"
        )
    return logits


def forward(
    model: nn.Module, batch: dict[str, Any], device: torch.device, dtype: Optional[torch.dtype]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, mask)`` of a collated batch, float32 on ``device``: the model run under :func:`autocast`,
    its output checked against the masks (:func:`check_output`)."""
    image, mask = batch_to(batch, device)
    with autocast(device, dtype):
        logits = model(image)
    return check_output(logits, mask).float(), mask


def hard_dice_sums(logits: torch.Tensor, target: torch.Tensor, threshold: float) -> tuple[float, int]:
    """Sum over images of the per-image Dice (mean over classes) of the thresholded prediction.

    ``logits, target: (B, K, ...)``. An image and class where both prediction and target are empty
    counts as Dice 1 (as :func:`spatialrec.metrics.dice`). Used for the progress bar and the
    per-epoch validation Dice; the final test metrics come from :func:`~spatialrec.train.evaluate`.
    """
    with torch.no_grad():
        dice = M.dice(torch.sigmoid(logits.float()) > threshold, target > 0.5).double()
        return float(dice.mean(dim=1).sum()), int(dice.shape[0])


def require_tqdm() -> Any:
    """``tqdm.tqdm``, or an ImportError that names the extra to install."""
    try:
        from tqdm import tqdm
    except ImportError as err:
        raise ImportError(
            "the progress bar needs tqdm: pip install 'spatialrec[data]' (or pass progress=False)"
        ) from err
    return tqdm


def progress_bar(show: bool, total: int, desc: str) -> Any:
    """A tqdm bar of ``total`` steps, or ``None`` when not shown."""
    if not show:
        return None
    return require_tqdm()(total=total, desc=desc, leave=False, dynamic_ncols=True)


def non_finite_state(net: nn.Module, ctx: D.DistContext) -> list[str]:
    """Names of ``net``'s floating-point parameters and buffers holding NaN or inf, in any process.

    One reduction per call (plus a gather of the names when some are found), so every process
    returns the same list; ``[]`` when all are finite.
    """
    tensors = [(n, t) for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in tensors]).tolist() if tensors else []
    names = [n for (n, _), ok in zip(tensors, finite) if not ok]
    flag = D.all_reduce_max(torch.tensor([float(bool(names))], device=ctx.device), ctx)
    if flag.item() == 0:
        return []
    return sorted({n for part in D.all_gather_objects(names, ctx) for n in part})


def check_binary_masks(mask: torch.Tensor, ctx: D.DistContext) -> None:
    """Refuse masks with values outside ``[0, 1]`` (or NaN), in any process; every process raises.

    ``mask: (B, K, ...)``. fit's masks are one channel per class, 0 background and 1 foreground
    (soft values in between are allowed); 0/255 image masks or label maps with -1 would train
    a model on a meaningless target without any error.

    Raises:
        ValueError: naming the range of values found (over all processes).
    """
    m = mask.detach().double()
    nan = torch.isnan(m)
    values = m[~nan]
    lo, hi = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
    stats = D.all_reduce_max(torch.tensor([-lo, hi, float(nan.any())], dtype=torch.float64, device=ctx.device), ctx)
    lo, hi, has_nan = -float(stats[0]), float(stats[1]), bool(stats[2] > 0)
    if has_nan or lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"the masks of the first training batch hold values in [{lo:g}, {hi:g}]{' and NaN' if has_nan else ''}; "
            "fit needs masks with values in [0, 1], one channel per class (0 background, 1 foreground). Masks "
            "read as 0/255 images: divide by 255; label maps (class indices, -1 for 'ignore'): convert them to "
            "one 0/1 channel per class first (e.g. spatialrec.metrics.to_masks(..., mode='labels'))"
        )


def train_epoch(
    train_model: nn.Module,
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: LossFn,
    *,
    ctx: D.DistContext,
    dtype: Optional[torch.dtype],
    threshold: float,
    grad_clip: Optional[float],
    epoch: int,
    last_checkpoint: Optional[Path],
    bar: Any = None,
    check_masks: bool = False,
) -> tuple[float, float]:
    """Take the optimiser steps of one epoch; return the mean training loss and Dice (all processes).

    Args:
        train_model: the model as trained (``net`` or its DistributedDataParallel wrapper).
        net: the model itself (its parameters are clipped).
        epoch: 0-based index of this epoch (errors name it 1-based).
        last_checkpoint: named by :class:`NonFiniteLossError` as the checkpoint that was kept.
        bar: an optional progress bar, updated every step.
        check_masks: check the first batch's masks with :func:`check_binary_masks`.

    Raises:
        ValueError: with ``check_masks``, the first batch's masks are not in ``[0, 1]``.
        NonFiniteLossError: a loss was NaN/inf in any process; raised by every process before
            that step changes a weight.
    """
    train_model.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss * n, dice sum, n
    dev = ctx.device
    for step, batch in enumerate(loader):
        if check_masks and step == 0:
            check_binary_masks(batch["mask"], ctx)  # as loaded: only its range is needed, no device copy
        logits, mask = forward(train_model, batch, dev, dtype)
        loss = loss_fn(logits, mask)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
        # Every process must agree to stop, or the others would wait forever in the next step.
        finite = bool(torch.isfinite(loss.detach()).item())
        bad = torch.tensor([0.0 if finite else 1.0], device=dev)
        if D.all_reduce_max(bad, ctx).item() > 0:
            value = float(loss.detach()) if not finite else float("nan")
            raise NonFiniteLossError(epoch + 1, step + 1, value, last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), float(grad_clip))
        scaler.step(optimizer)
        scaler.update()
        dsum, n = hard_dice_sums(logits, mask, threshold)
        sums += torch.tensor([float(loss.detach()) * n, dsum, n], dtype=torch.float64)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", dice=f"{sums[1] / sums[2]:.4f}")
    sums = D.all_reduce_sum(sums.to(dev), ctx).cpu()
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


@torch.no_grad()
def validate(
    net: nn.Module, loader: DataLoader, loss_fn: LossFn, *, ctx: D.DistContext, dtype: Optional[torch.dtype], threshold: float
) -> tuple[float, float]:
    """Mean loss and mean per-image Dice over the whole validation set (all processes)."""
    net.eval()
    loader.generator.manual_seed(0)  # type: ignore[union-attr]
    sums = torch.zeros(3, dtype=torch.float64)
    for batch in loader:
        logits, mask = forward(net, batch, ctx.device, dtype)
        dsum, n = hard_dice_sums(logits, mask, threshold)
        sums += torch.tensor([float(loss_fn(logits, mask)) * n, dsum, n], dtype=torch.float64)
    sums = D.all_reduce_sum(sums.to(ctx.device), ctx).cpu()
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


__all__ = [
    "autocast",
    "batch_to",
    "check_binary_masks",
    "check_output",
    "forward",
    "hard_dice_sums",
    "make_loader",
    "non_finite_state",
    "progress_bar",
    "require_tqdm",
    "seed_everything",
    "train_epoch",
    "validate",
]
