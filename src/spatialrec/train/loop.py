"""The training loop shared by the examples: :func:`fit` and :func:`evaluate`.

One epoch of :func:`fit` is: shuffle the training set with a generator seeded by ``(seed,
epoch)``, take optimiser steps over it (optionally under autocast, with gradient clipping), then
compute the validation loss and Dice, step the learning-rate schedule, update early stopping,
append a row to ``metrics.csv`` and save ``last.pt`` (and ``best.pt`` when the validation loss
improved). After the last epoch the best weights are put back and, when a test set is given,
:func:`evaluate` writes per-class test Dice, IoU and HD95 to ``metrics.json``.

Under ``torchrun`` the same code runs data-parallel (see :mod:`spatialrec.train.distributed`):
every process trains on its share of each global batch, gradients are averaged by
``DistributedDataParallel``, metrics are summed over processes, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as D
from .checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint

logger = logging.getLogger("spatialrec.train")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "plateau")
CSV_COLUMNS = ("epoch", "train_loss", "train_dice", "val_loss", "val_dice", "lr", "epoch_time", "train_time")

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before the bad step changed any weight.

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based step within the epoch, or ``None`` when the validation loss was non-finite.
        value: the offending loss value.
        checkpoint: the last good checkpoint (left untouched), or ``None`` if none was written.
    """

    def __init__(self, epoch: int, step: Optional[int], value: float, checkpoint: Optional[Path]) -> None:
        where = f"epoch {epoch}, step {step}" if step is not None else f"epoch {epoch}, validation"
        kept = (
            f"the last good checkpoint {checkpoint} was kept"
            if checkpoint is not None
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"non-finite loss ({value}) at {where}; training stopped and {kept}. Try a lower learning "
            "rate, gradient clipping (grad_clip) or training without mixed precision."
        )
        self.epoch = epoch
        self.step = step
        self.value = value
        self.checkpoint = checkpoint


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per completed epoch with the keys of :data:`CSV_COLUMNS`.
        best_epoch: 1-based epoch with the lowest validation loss (its weights are in the model
            when ``restore_best``).
        best_val_loss: that loss.
        epochs_completed: epochs trained in total (over all resumes).
        stop_reason: ``"max_epochs"``, ``"early_stopping"`` or ``"time_budget"``.
        train_time: seconds spent in training and validation epochs (over all resumes).
        test_metrics: the summary of :func:`evaluate` on the test set, or ``None``.
        out_dir: the folder with checkpoints and metrics, or ``None``.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    epochs_completed: int
    stop_reason: str
    train_time: float
    test_metrics: Optional[dict[str, Any]] = None
    out_dir: Optional[Path] = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# argument checks


def _check_dataset(name: str, data: object) -> Dataset:
    if isinstance(data, DataLoader):
        raise TypeError(
            f"{name} must be a Dataset (items {{'image', 'mask', 'id'}}), got a DataLoader; fit builds "
            "its own loaders so that the data order and the split over processes are reproducible"
        )
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"{name} must be a map-style Dataset with __getitem__ and __len__, got {type(data).__name__}")
    n = len(data)  # type: ignore[arg-type]
    if n < 1:
        raise ValueError(f"{name} is empty; it needs at least one sample")
    item = data[0]  # type: ignore[index]
    if not isinstance(item, dict) or "image" not in item or "mask" not in item:
        got = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise TypeError(f"{name}[0] must be a dict with 'image' (C, H, W) and 'mask' (K, H, W) tensors, got {got}")
    # Images (C, H, W), or volumes (C, D, H, W) for 3D models (spatialrec.data.patches3d).
    for key in ("image", "mask"):
        t = item[key]
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            layout = "(C, H, W) or (C, D, H, W)" if key == "image" else "(K, H, W) or (K, D, H, W)"
            raise ValueError(f"{name}[0][{key!r}] must be a tensor of shape {layout}, got {shape}")
    if item["image"].dim() != item["mask"].dim():
        raise ValueError(
            f"{name}[0]: 'image' {tuple(item['image'].shape)} and 'mask' {tuple(item['mask'].shape)} must have "
            "the same number of dims (both 2D images or both 3D volumes)"
        )
    return data  # type: ignore[return-value]


def _check_positive(name: str, value: object, kind: type = int, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, int) and not isinstance(value, bool)
    if not ok:
        raise TypeError(f"{name} must be {'a number' if kind is float else 'an int'}, got {type(value).__name__} {value!r}")
    if value <= 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


_AMP_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_amp_dtype(amp: bool, amp_dtype: "Optional[Union[str, torch.dtype]]", device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` when mixed precision is off.

    Default: bfloat16 on CPU; on CUDA bfloat16 where the GPU supports it, else float16.
    """
    if not isinstance(amp, bool):
        raise TypeError(f"amp must be a bool, got {type(amp).__name__}")
    if not amp:
        return None
    if amp_dtype is None:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if isinstance(amp_dtype, str):
        key = amp_dtype.strip().lower()
        if key not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype={amp_dtype!r} is not supported; expected 'bf16' or 'fp16'")
        return _AMP_DTYPES[key]
    if amp_dtype in (torch.bfloat16, torch.float16):
        return amp_dtype
    raise ValueError(f"amp_dtype={amp_dtype!r} is not supported; expected torch.bfloat16 or torch.float16")


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager[Any]:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_loss() -> LossFn:
    """The paper's loss: sigmoid soft Dice per channel, from :mod:`spatialrec.losses`."""
    try:
        from .. import losses
    except ImportError as err:
        raise ImportError(f"spatialrec.losses is not available in this build ({err}); pass loss_fn explicitly") from err
    return losses.DiceLoss()


# --------------------------------------------------------------------------------------------
# helpers


def _hard_dice_sums(logits: torch.Tensor, target: torch.Tensor, threshold: float) -> tuple[float, int]:
    """Sum over images of the per-image Dice (mean over classes) of the thresholded prediction.

    ``logits, target: (B, K, ...)``. An image and class where both prediction and target are empty
    counts as Dice 1. Used for the progress bar and the per-epoch validation Dice; the final test
    metrics come from :func:`evaluate`.
    """
    with torch.no_grad():
        pred = torch.sigmoid(logits.float()) > threshold
        tgt = target > 0.5
        dims = tuple(range(2, pred.dim()))
        inter = (pred & tgt).sum(dims).double()
        total = (pred.sum(dims) + tgt.sum(dims)).double()
        dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
        return float(dice.mean(dim=1).sum()), int(dice.shape[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_loader(
    data: Dataset, sampler: D.ShardedEpochSampler, batch_size: int, num_workers: int, device: torch.device, drop_last: bool
) -> DataLoader:
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        # Its own generator, reseeded each epoch, so that worker seeds do not draw on global RNG.
        generator=torch.Generator(),
    )


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_text(rows: Sequence[dict[str, float]], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by ``None`` (and tensors/np scalars by floats) so that JSON stays valid."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _batch_to(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    non_blocking = device.type == "cuda"
    image = batch["image"].to(device, non_blocking=non_blocking).float()
    mask = batch["mask"].to(device, non_blocking=non_blocking).float()
    return image, mask


def _check_output(logits: object, mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model must return a logits tensor (B, K, H, W), got {type(logits).__name__}")
    if logits.shape != mask.shape:
        raise ValueError(
            f"the model output has shape {tuple(logits.shape)} but the masks have shape {tuple(mask.shape)}; "
            "the model's num_classes must equal the data set's num_classes (K) and the output the input size"
        )
    return logits


def _state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in D.unwrap(model).state_dict().items()}


# --------------------------------------------------------------------------------------------
# evaluation


def _summarise(values: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """values: (N, K) per image and class; NaN (undefined) and inf are left out of the means and counted."""
    finite = torch.isfinite(values)
    per_class: list[Optional[float]] = []
    for k in range(values.shape[1]):
        col = values[finite[:, k], k]
        per_class.append(float(col.mean()) if col.numel() else None)
    defined = [v for v in per_class if v is not None]
    return {
        "per_class": dict(zip(class_names, per_class)),
        "mean": float(np.mean(defined)) if defined else None,
        "undefined": int(torch.isnan(values).sum()),
        "infinite": int(torch.isinf(values).sum()),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 8,
    device: "str | torch.device" = "auto",
    threshold: float = 0.5,
    loss_fn: Optional[LossFn] = None,
    amp: bool = False,
    amp_dtype: "Optional[Union[str, torch.dtype]]" = None,
    hd95: bool = True,
    class_names: Optional[Sequence[str]] = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Test a segmentation model: per-class Dice, IoU and HD95 averaged over images.

    The prediction is ``sigmoid(model(image)) > threshold`` per class. Metrics come from
    :mod:`spatialrec.metrics`, per image and class; a class is averaged over the images where
    the metric is finite: HD95 is NaN when prediction and ground truth are both empty (counted in
    ``"undefined"``) and infinite when exactly one of them is (counted in ``"infinite"``; a
    missed or hallucinated structure, look at this count next to the mean). HD95 is in millimetres when items carry
    ``"spacing"``, else in pixels. Under ``torchrun`` every process tests its share and the
    results are gathered, so every process returns the same, complete result.

    Args:
        model: maps ``image: (B, C, H, W)`` to logits ``(B, K, H, W)``.
        data: Dataset of dicts ``{"image": (C, H, W), "mask": (K, H, W), "id": str}``.
        batch_size: images per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        threshold: on the sigmoid probability.
        loss_fn: when given, also the mean loss ``loss_fn(logits, mask)`` over images.
        amp, amp_dtype: run the model under autocast (see :func:`fit`).
        hd95: compute HD95 (the slowest metric; skip it for quick checks).
        class_names: ``K`` names for the per-class entries (default ``"class_0"``, ...).
        num_workers: DataLoader workers.
        progress: show a tqdm bar (needs ``spatialrec[data]``).

    Returns:
        ``{"dice": S, "iou": S, "hd95": S (if hd95), "loss": float (if loss_fn), "num_images": N,
        "per_image": [{"id", "dice": [K], "iou": [K], "hd95": [K]}, ...]}`` where each ``S`` is
        ``{"per_class": {name: value}, "mean": mean over classes, "undefined": n, "infinite": n}``.
    """
    from .. import metrics as M

    data = _check_dataset("data", data)
    _check_positive("batch_size", batch_size)
    ctx = D.setup(device)
    dev = ctx.device
    dtype = resolve_amp_dtype(amp, amp_dtype, dev)
    net = D.unwrap(model)
    was_training = net.training
    net.to(dev).eval()
    sampler = D.ShardedEpochSampler(len(data), shuffle=False, rank=ctx.rank, world_size=ctx.world_size, pad=False)  # type: ignore[arg-type]
    loader = _make_loader(data, sampler, batch_size, num_workers, dev, drop_last=False)
    indices = iter(sampler)
    bar = _progress_bar(progress and ctx.is_main, len(loader), "test")
    rows: list[tuple[int, dict[str, Any]]] = []
    loss_sum = 0.0
    try:
        for batch in loader:
            image, mask = _batch_to(batch, dev)
            with _autocast(dev, dtype):
                logits = net(image)
            logits = _check_output(logits, mask).float()
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, mask)) * image.shape[0]
            pred = (torch.sigmoid(logits) > threshold).cpu()
            tgt = (mask > 0.5).cpu()
            dice_v = M.dice(pred, tgt)
            iou_v = M.iou(pred, tgt)
            if hd95:
                spacing = batch.get("spacing")
                hd_v = _hd95(M, pred, tgt, spacing)
            ids = batch.get("id", [None] * image.shape[0])
            for b in range(image.shape[0]):
                idx = next(indices)
                row: dict[str, Any] = {
                    "id": str(ids[b]) if ids[b] is not None else str(idx),
                    "dice": [float(v) for v in dice_v[b]],
                    "iou": [float(v) for v in iou_v[b]],
                }
                if hd95:
                    row["hd95"] = [float(v) for v in hd_v[b]]
                rows.append((idx, row))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        net.train(was_training)
    gathered = D.all_gather_objects((rows, loss_sum), ctx)
    all_rows = sorted((r for part, _ in gathered for r in part), key=lambda t: t[0])
    per_image = [r for _, r in all_rows]
    total_loss = sum(ls for _, ls in gathered)
    k = len(per_image[0]["dice"])
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but the masks have {k} classes")
    result: dict[str, Any] = {"num_images": len(per_image)}
    metrics = ("dice", "iou", "hd95") if hd95 else ("dice", "iou")
    for name in metrics:
        values = torch.tensor([r[name] for r in per_image], dtype=torch.float64)
        result[name] = _summarise(values, names)
    if loss_fn is not None:
        result["loss"] = total_loss / len(per_image)
    result["per_image"] = per_image
    return result


def _hd95(M: Any, pred: torch.Tensor, tgt: torch.Tensor, spacing: Optional[torch.Tensor]) -> torch.Tensor:
    if spacing is None:
        return M.hd95(pred, tgt)
    # (B, 2): each image measured with its own pixel size (a batch may mix volumes).
    return M.hd95(pred, tgt, spacing=torch.as_tensor(spacing, dtype=torch.float64).reshape(pred.shape[0], -1))


def _require_tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError as err:
        raise ImportError(
            "the progress bar needs tqdm: pip install 'spatialrec[data]' (or pass progress=False)"
        ) from err
    return tqdm


def _progress_bar(show: bool, total: int, desc: str) -> Any:
    if not show:
        return None
    return _require_tqdm()(total=total, desc=desc, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# training


def _make_optimizer(name: str, params: Any, lr: float, weight_decay: Optional[float]) -> torch.optim.Optimizer:
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not supported; expected one of {OPTIMIZERS}")
    if name.lower() == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=0.0 if weight_decay is None else weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay)


def _make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, epochs: int, patience: Optional[int]
) -> Optional[Any]:
    if not isinstance(name, str) or name.lower() not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={name!r} is not supported; expected one of {LR_SCHEDULES}")
    name = name.lower()
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    # Halve the rate when the validation loss stalls for a third of the early-stopping patience.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(1, (patience or 30) // 3)
    )


def _stop_reason(
    epoch: int,
    epochs: int,
    bad_epochs: int,
    patience: Optional[int],
    train_time: float,
    epoch_time: float,
    time_budget: Optional[float],
) -> Optional[str]:
    """Why training stops after ``epoch`` completed epochs, or ``None`` to go on."""
    if patience is not None and bad_epochs >= patience:
        return "early_stopping"
    if epoch >= epochs:
        return "max_epochs"
    if time_budget is not None and train_time + epoch_time > time_budget:
        return "time_budget"
    return None


def fit(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    *,
    test_data: Optional[Dataset] = None,
    loss_fn: Optional[LossFn] = None,
    epochs: int = 300,
    batch_size: int = 8,
    lr: float = 1e-4,
    optimizer: str = "adam",
    weight_decay: Optional[float] = None,
    lr_schedule: str = "constant",
    patience: Optional[int] = 30,
    min_delta: float = 0.0,
    grad_clip: Optional[float] = None,
    amp: bool = False,
    amp_dtype: "Optional[Union[str, torch.dtype]]" = None,
    device: "str | torch.device" = "auto",
    seed: int = 0,
    out_dir: Optional[PathLike] = None,
    resume: "Union[bool, PathLike]" = False,
    overwrite: bool = False,
    threshold: float = 0.5,
    time_budget: Optional[float] = None,
    num_workers: int = 0,
    drop_last: bool = False,
    eval_batch_size: Optional[int] = None,
    hd95: bool = True,
    class_names: Optional[Sequence[str]] = None,
    sync_batchnorm: bool = False,
    restore_best: bool = True,
    progress: bool = True,
    on_epoch_end: Optional[Callable[[dict[str, float]], None]] = None,
    run_info: Optional[dict[str, Any]] = None,
) -> FitResult:
    """Train a segmentation model with early stopping, checkpoints and optional test evaluation.

    Data items are dicts ``{"image": (C, H, W), "mask": (K, H, W) 0/1, "id": str}``; the model maps
    ``(B, C, H, W)`` images to ``(B, K, H, W)`` logits. The defaults are the paper's settings:
    Adam, learning rate 1e-4, Dice loss, early stopping on the validation loss with patience 30,
    up to 300 epochs.

    Reproducibility: ``fit`` seeds Python, NumPy and torch with ``seed + rank`` when it starts; the
    training order of epoch ``e`` is a function of ``(seed, e)`` only. A run killed and resumed
    with ``resume=True`` ends with the same weights as a run that was never stopped (on the same
    hardware and software).

    Files written to ``out_dir`` (by rank 0 only): ``metrics.csv`` (one row per epoch, columns
    :data:`CSV_COLUMNS`), ``last.pt`` after every epoch and ``best.pt`` when the validation loss
    improved (both written atomically; see :mod:`spatialrec.train.checkpoint`), and at the end
    ``metrics.json`` (training summary and, with ``test_data``, the test metrics).

    Args:
        model: the network; moved to ``device``.
        train_data, val_data: map-style Datasets of dicts as above.
        test_data: optional; tested with the best weights at the end (:func:`evaluate`).
        loss_fn: ``loss_fn(logits, mask) -> scalar`` averaged over the batch; default
            sigmoid soft Dice per channel (:class:`spatialrec.losses.DiceLoss`).
        epochs: maximum number of epochs.
        batch_size: images per optimiser step *per process* (the global batch under torchrun is
            ``batch_size * world_size``).
        lr: learning rate. optimizer: ``"adam"`` or ``"adamw"``.
        weight_decay: default 0 for Adam, 0.01 for AdamW.
        lr_schedule: ``"constant"`` (the paper), ``"cosine"`` (to 0 over ``epochs``) or
            ``"plateau"`` (halve on a validation-loss plateau of ``patience // 3`` epochs).
        patience: stop after this many epochs without a validation-loss improvement of more
            than ``min_delta``; ``None`` disables early stopping.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        amp: mixed precision; ``amp_dtype`` ``"bf16"``/``"fp16"`` (default bfloat16 on CPU,
            bfloat16 on CUDA where supported else float16 with a gradient scaler).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``; under torchrun with CUDA
            each process uses ``cuda:LOCAL_RANK``.
        seed: seed of the run.
        out_dir: folder for checkpoints and metrics; ``None`` writes nothing (no resume).
        resume: ``True`` continues from ``out_dir/last.pt``; a path continues from that file.
        overwrite: allow starting a fresh run in an ``out_dir`` that already holds one.
        threshold: on the sigmoid probability for Dice.
        time_budget: seconds of training (summed over resumes); stop (``stop_reason=
            "time_budget"``) after the epoch at which another epoch of the same length would
            exceed it. At least one epoch runs.
        num_workers: DataLoader workers. drop_last: drop each epoch's last incomplete batch.
        eval_batch_size: batch size of validation and test (default ``batch_size``).
        hd95: compute HD95 in the final test.
        class_names: names of the ``K`` classes in ``metrics.json``.
        sync_batchnorm: under torchrun on CUDA, convert BatchNorm to SyncBatchNorm (otherwise
            each process normalises with its own share of the batch).
        restore_best: load the best weights into ``model`` at the end.
        progress: tqdm bar with loss and Dice on rank 0 (needs ``spatialrec[data]``).
        on_epoch_end: called with each epoch's metric row after its checkpoint is written.
        run_info: extra JSON-able entries for ``metrics.json`` (model name, data set...).

    Returns:
        A :class:`FitResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names epoch and step; checkpoints untouched).
        CheckpointError: the checkpoint to resume from is cut short or damaged.
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.

    Example:
        >>> result = fit(model, train_set, val_set, test_data=test_set, epochs=50,
        ...              batch_size=8, out_dir="runs/unet")          # doctest: +SKIP
        >>> result.test_metrics["dice"]["mean"]                      # doctest: +SKIP
    """
    # ---- arguments
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    train_data = _check_dataset("train_data", train_data)
    val_data = _check_dataset("val_data", val_data)
    if test_data is not None:
        test_data = _check_dataset("test_data", test_data)
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("lr", lr, float)
    _check_positive("patience", patience, int, allow_none=True)
    _check_positive("grad_clip", grad_clip, float, allow_none=True)
    _check_positive("time_budget", time_budget, float, allow_none=True)
    eval_bs = _check_positive("eval_batch_size", eval_batch_size, int, allow_none=True) or batch_size
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if resume is not False and resume is not None and out_dir is None and not isinstance(resume, (str, os.PathLike)):
        raise ValueError("resume=True needs out_dir (it continues from out_dir/last.pt)")
    loss_fn = loss_fn if loss_fn is not None else default_loss()

    ctx = D.setup(device)
    dev = ctx.device
    dtype = resolve_amp_dtype(amp, amp_dtype, dev)
    if progress and ctx.is_main:
        _require_tqdm()  # fail now, not after the first epoch
    out = Path(out_dir) if out_dir is not None else None
    writes = out is not None and ctx.is_main

    resume_path: Optional[Path] = None
    if resume is True:
        resume_path = out / LAST_CHECKPOINT  # type: ignore[operator]
        if not resume_path.is_file():
            raise FileNotFoundError(f"resume=True but {resume_path} does not exist; nothing to resume (drop --resume to start)")
    elif resume not in (False, None):
        resume_path = Path(resume)  # type: ignore[arg-type]
        if not resume_path.is_file():
            raise FileNotFoundError(f"resume={str(resume)!r}: checkpoint file does not exist")
    if out is not None and resume_path is None and not overwrite and (out / LAST_CHECKPOINT).exists():
        raise FileExistsError(
            f"{out} already holds a run ({LAST_CHECKPOINT}); pass resume=True to continue it, "
            "overwrite=True to replace it, or choose another out_dir"
        )

    # ---- model, optimiser, schedule
    _seed_everything(seed + ctx.rank)
    net = D.unwrap(model).to(dev)
    if sync_batchnorm and ctx.distributed and dev.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    opt = _make_optimizer(optimizer, net.parameters(), float(lr), weight_decay)
    sched = _make_scheduler(lr_schedule, opt, epochs, patience)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    config = {
        "seed": seed, "batch_size": batch_size, "world_size": ctx.world_size, "lr": float(lr),
        "optimizer": optimizer, "weight_decay": weight_decay, "lr_schedule": lr_schedule,
        "patience": patience, "min_delta": min_delta, "grad_clip": grad_clip,
        "amp_dtype": str(dtype) if dtype is not None else None, "epochs": epochs, "drop_last": drop_last,
    }  # fmt: skip

    start_epoch = 0
    history: list[dict[str, float]] = []
    best_val, best_epoch, bad_epochs = math.inf, 0, 0
    train_time = 0.0
    stop_reason: Optional[str] = None
    best_state: Optional[dict[str, torch.Tensor]] = None

    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, map_location=dev)
        try:
            net.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint {resume_path} does not fit this model: {err}") from err
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        es = ckpt["early_stopping"]
        best_val, best_epoch, bad_epochs = float(es["best_val_loss"]), int(es["best_epoch"]), int(es["bad_epochs"])
        history = list(ckpt["history"])
        train_time = float(ckpt.get("train_time", 0.0))
        # Decided again with today's settings: a run stopped at its epoch limit continues when
        # resumed with a higher one.
        last_time = float(history[-1]["epoch_time"]) if history else 0.0
        stop_reason = _stop_reason(start_epoch, epochs, bad_epochs, patience, train_time, last_time, time_budget)
        stop_reason = D.broadcast_object(stop_reason, ctx)
        changed = {k: (ckpt["config"].get(k), v) for k, v in config.items() if ckpt["config"].get(k) != v}
        if changed:
            logger.warning("resuming %s with changed settings (checkpoint -> now): %s", resume_path, changed)
        rngs = ckpt["rng"]
        if len(rngs) != ctx.world_size:
            logger.warning(
                "checkpoint %s was written by %d process(es), this run has %d; the random streams will "
                "not continue exactly", resume_path, len(rngs), ctx.world_size,
            )  # fmt: skip
        restore_rng_state(rngs[min(ctx.rank, len(rngs) - 1)])
        best_file = resume_path.with_name(BEST_CHECKPOINT)
        if best_epoch > 0 and best_file.is_file():
            try:
                best_ckpt = load_checkpoint(best_file, map_location="cpu")
            except CheckpointError as err:
                logger.warning("%s", err)
                best_ckpt = None
            if best_ckpt is not None and int(best_ckpt["epoch"]) == best_epoch:
                best_state = best_ckpt["model"]
            elif best_ckpt is not None:
                logger.warning(
                    "%s holds epoch %s, not the best epoch %d recorded in %s; it is rewritten when "
                    "that epoch's result is reached again", best_file, best_ckpt["epoch"], best_epoch, resume_path,
                )  # fmt: skip
        logger.info("resumed from %s after epoch %d", resume_path, start_epoch)

    train_model: nn.Module = net
    if ctx.distributed:
        train_model = nn.parallel.DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)

    train_sampler = D.ShardedEpochSampler(
        len(train_data), shuffle=True, seed=seed, rank=ctx.rank, world_size=ctx.world_size, pad=True  # type: ignore[arg-type]
    )
    val_sampler = D.ShardedEpochSampler(len(val_data), shuffle=False, rank=ctx.rank, world_size=ctx.world_size, pad=False)  # type: ignore[arg-type]
    train_loader = _make_loader(train_data, train_sampler, batch_size, num_workers, dev, drop_last)
    val_loader = _make_loader(val_data, val_sampler, eval_bs, num_workers, dev, drop_last=False)
    if len(train_loader) == 0:
        raise ValueError(
            f"train_data has {len(train_data)} samples, too few for one batch of {batch_size} per process "  # type: ignore[arg-type]
            f"with drop_last=True over {ctx.world_size} process(es)"
        )

    if writes:
        out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        # The checkpoint's history is the truth: a row written after its last checkpoint is dropped.
        _atomic_write_text(out / METRICS_CSV, _csv_text(history))  # type: ignore[operator]

    last_ckpt: Optional[Path] = resume_path if resume_path is not None else None
    epoch = start_epoch
    while stop_reason is None:
        t0 = time.perf_counter()
        train_sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(D.epoch_seed(seed, epoch) + 7919 * ctx.rank)  # type: ignore[union-attr]
        train_model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, dice sum, n
        bar = _progress_bar(progress and ctx.is_main, len(train_loader), f"epoch {epoch + 1}/{epochs}")
        try:
            for step, batch in enumerate(train_loader):
                image, mask = _batch_to(batch, dev)
                with _autocast(dev, dtype):
                    logits = train_model(image)
                logits = _check_output(logits, mask).float()
                loss = loss_fn(logits, mask)
                if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
                # Every process must agree to stop, or the others would wait forever in the next step.
                finite = bool(torch.isfinite(loss.detach()).item())
                bad = torch.tensor([0.0 if finite else 1.0], device=dev)
                if D.all_reduce_max(bad, ctx).item() > 0:
                    value = float(loss.detach()) if not finite else float("nan")
                    raise NonFiniteLossError(epoch + 1, step + 1, value, last_ckpt)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(net.parameters(), float(grad_clip))
                scaler.step(opt)
                scaler.update()
                n = image.shape[0]
                dsum, _ = _hard_dice_sums(logits, mask, threshold)
                sums += torch.tensor([float(loss.detach()) * n, dsum, n], dtype=torch.float64)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", dice=f"{sums[1] / sums[2]:.4f}")
        finally:
            if bar is not None:
                bar.close()
        sums = D.all_reduce_sum(sums.to(dev), ctx).cpu()
        train_loss, train_dice = float(sums[0] / sums[2]), float(sums[1] / sums[2])

        val_loss, val_dice = _validate(net, val_loader, loss_fn, dev, dtype, threshold, ctx)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(epoch + 1, None, val_loss, last_ckpt)
        epoch += 1
        current_lr = float(opt.param_groups[0]["lr"])
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss)
        elif sched is not None:
            sched.step()

        improved = val_loss < best_val - min_delta
        if improved:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = _state_dict_cpu(net)
        else:
            bad_epochs += 1
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        row = {
            "epoch": epoch, "train_loss": train_loss, "train_dice": train_dice, "val_loss": val_loss,
            "val_dice": val_dice, "lr": current_lr, "epoch_time": epoch_time, "train_time": train_time,
        }  # fmt: skip
        history.append(row)
        stop_reason = _stop_reason(epoch, epochs, bad_epochs, patience, train_time, epoch_time, time_budget)
        # Clocks differ between processes: rank 0 decides for all, or some would wait forever.
        stop_reason = D.broadcast_object(stop_reason, ctx)

        rng = D.all_gather_objects(capture_rng_state(), ctx)
        if writes:
            state = {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "epoch": epoch,
                "early_stopping": {"best_val_loss": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs},
                "rng": rng,
                "history": history,
                "train_time": train_time,
                "stop_reason": stop_reason,
                "config": config,
            }
            with open(out / METRICS_CSV, "a", encoding="utf-8", newline="") as f:  # type: ignore[operator]
                f.write(_csv_text([row], header=False))
            # best before last: after a kill in between, best.pt is never older than last.pt says.
            if improved:
                save_checkpoint(state, out / BEST_CHECKPOINT)  # type: ignore[operator]
            last_ckpt = save_checkpoint(state, out / LAST_CHECKPOINT)  # type: ignore[operator]
        logger.info(
            "epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  lr %.2e  %.1fs%s",
            epoch, epochs, train_loss, train_dice, val_loss, val_dice, current_lr, epoch_time,
            "  (best)" if improved else "",
        )  # fmt: skip
        D.barrier(ctx)
        if on_epoch_end is not None:
            on_epoch_end(dict(row))

    if restore_best:
        if best_state is not None:
            net.load_state_dict(best_state)
        elif history:
            logger.warning("the best weights (epoch %d) are not available; keeping the last weights", best_epoch)

    test_metrics: Optional[dict[str, Any]] = None
    if test_data is not None:
        test_metrics = evaluate(
            net, test_data, batch_size=eval_bs, device=dev, threshold=threshold, loss_fn=loss_fn,
            amp=dtype is not None, amp_dtype=dtype, hd95=hd95, class_names=class_names, num_workers=num_workers,
            progress=progress,
        )  # fmt: skip
    result = FitResult(
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_val,
        epochs_completed=len(history),
        stop_reason=stop_reason,
        train_time=train_time,
        test_metrics=test_metrics,
        out_dir=out,
    )
    if writes:
        summary: dict[str, Any] = dict(run_info or {})
        summary.update(
            best_epoch=best_epoch, best_val_loss=best_val, epochs_completed=len(history),
            stop_reason=stop_reason, train_time_s=train_time, world_size=ctx.world_size,
            parameters=sum(p.numel() for p in net.parameters()),
        )  # fmt: skip
        if test_metrics is not None:
            summary["test"] = {k: v for k, v in test_metrics.items() if k != "per_image"}
        _atomic_write_text(out / METRICS_JSON, json.dumps(_json_safe(summary), indent=2) + "\n")  # type: ignore[operator]
    D.barrier(ctx)
    return result


@torch.no_grad()
def _validate(
    net: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    dev: torch.device,
    dtype: Optional[torch.dtype],
    threshold: float,
    ctx: D.DistContext,
) -> tuple[float, float]:
    """Mean loss and mean per-image Dice over the whole validation set (all processes)."""
    net.eval()
    loader.generator.manual_seed(0)  # type: ignore[union-attr]
    sums = torch.zeros(3, dtype=torch.float64)
    for batch in loader:
        image, mask = _batch_to(batch, dev)
        with _autocast(dev, dtype):
            logits = net(image)
        logits = _check_output(logits, mask).float()
        n = image.shape[0]
        dsum, _ = _hard_dice_sums(logits, mask, threshold)
        sums += torch.tensor([float(loss_fn(logits, mask)) * n, dsum, n], dtype=torch.float64)
    sums = D.all_reduce_sum(sums.to(dev), ctx).cpu()
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


__all__ = [
    "CSV_COLUMNS",
    "FitResult",
    "LR_SCHEDULES",
    "NonFiniteLossError",
    "OPTIMIZERS",
    "default_loss",
    "evaluate",
    "fit",
    "resolve_amp_dtype",
]
