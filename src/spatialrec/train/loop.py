"""The training loop shared by the examples: :func:`fit`, which only orchestrates the pieces listed
in :mod:`spatialrec.train`.

One epoch: shuffle the training set with a generator seeded by ``(seed, epoch)``, take optimiser
steps over it, compute the validation loss and Dice, step the learning-rate schedule, update early
stopping, append a row to ``metrics.csv`` and save ``last.pt`` (and ``best.pt`` when the validation
loss improved). Under ``torchrun`` the same code runs data-parallel (see
:mod:`spatialrec.train.distributed`): metrics are summed over processes, only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as D
from .config import FitConfig, LossFn, check_dataset, resolve_amp_dtype
from .errors import NonFiniteLossError, NonFiniteStateError
from .evaluation import evaluate
from .resume import TrainState, find_resume_checkpoint, resume_training, training_checkpoint
from .rng import capture_rng_state
from .runfiles import CSV_COLUMNS, RunFiles
from .steps import make_loader, non_finite_state, progress_bar, require_tqdm, seed_everything, train_epoch, validate

logger = logging.getLogger("spatialrec.train")

PathLike = Union[str, "os.PathLike[str]"]


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
        test_metrics: the summary of :func:`~spatialrec.train.evaluate` on the test set (format:
            :mod:`spatialrec.summary`), or ``None``.
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


_OPTIMIZERS = {"adam": (torch.optim.Adam, 0.0), "adamw": (torch.optim.AdamW, 0.01)}  # class, default weight decay


def _make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, epochs: int, patience: Optional[int]
) -> Optional[Any]:
    name = name.lower()  # checked by FitConfig: one of LR_SCHEDULES
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    # Halve the rate when the validation loss stalls for a third of the early-stopping patience.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=max(1, (patience or 30) // 3)
    )


@dataclass
class _Parts:
    """What a run trains with: the model (and its DDP wrapper), optimiser, schedule, scaler, settings."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any]
    scaler: torch.amp.GradScaler
    config: dict[str, Any]
    train_model: Optional[nn.Module] = None
    masks_checked: bool = False  # the first training batch of this call is checked for [0, 1] masks

    @classmethod
    def build(cls, model: nn.Module, cfg: FitConfig, ctx: D.DistContext, dtype: Optional[torch.dtype]) -> "_Parts":
        net = D.unwrap(model).to(ctx.device)
        if cfg.sync_batchnorm and ctx.distributed and ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        optimizer_class, default_decay = _OPTIMIZERS[cfg.optimizer.lower()]  # checked by FitConfig
        decay = default_decay if cfg.weight_decay is None else cfg.weight_decay
        opt = optimizer_class(net.parameters(), lr=float(cfg.lr), weight_decay=decay)
        return cls(
            net=net,
            optimizer=opt,
            scheduler=_make_scheduler(cfg.lr_schedule, opt, cfg.epochs, cfg.patience),
            scaler=torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16),
            config=cfg.recorded(ctx.world_size, dtype),
        )

    def wrap(self, ctx: D.DistContext) -> None:
        """Under torchrun, train through a DistributedDataParallel wrapper of ``net`` (``train_model``)."""
        if ctx.distributed:
            ids = [ctx.device] if ctx.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def checkpoint(self, state: TrainState, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return training_checkpoint(
            state, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
            rng=rng, config=self.config,
        )  # fmt: skip


def _loaders(train_data: Dataset, val_data: Dataset, cfg: FitConfig, ctx: D.DistContext) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled per epoch, padded to equal shares) and the validation loader."""
    n_train, n_val = len(train_data), len(val_data)  # type: ignore[arg-type]
    train_sampler = D.ShardedEpochSampler(n_train, shuffle=True, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, pad=True)
    val_sampler = D.ShardedEpochSampler(n_val, shuffle=False, rank=ctx.rank, world_size=ctx.world_size, pad=False)
    train_loader = make_loader(train_data, train_sampler, cfg.batch_size, cfg.num_workers, ctx.device, cfg.drop_last)
    val_loader = make_loader(val_data, val_sampler, cfg.eval_batch_size, cfg.num_workers, ctx.device, drop_last=False)
    if len(train_loader) == 0:
        raise ValueError(
            f"train_data has {n_train} samples, too few for one batch of {cfg.batch_size} per process "
            f"with drop_last=True over {ctx.world_size} process(es)"
        )
    return train_loader, val_loader


def _decide_stop(state: TrainState, cfg: FitConfig, ctx: D.DistContext, epoch_time: float) -> Optional[str]:
    """Why training stops after ``state.epoch`` completed epochs, or ``None`` to go on.

    Decided by rank 0 for all: clocks differ, and a process that stopped alone would leave the
    others waiting forever.
    """
    reason = None
    if cfg.patience is not None and state.bad_epochs >= cfg.patience:
        reason = "early_stopping"
    elif state.epoch >= cfg.epochs:
        reason = "max_epochs"
    elif cfg.time_budget is not None and state.train_time + epoch_time > cfg.time_budget:
        reason = "time_budget"
    return D.broadcast_object(reason, ctx)


def _run_epoch(
    parts: _Parts,
    state: TrainState,
    loaders: tuple[DataLoader, DataLoader],
    cfg: FitConfig,
    ctx: D.DistContext,
    dtype: Optional[torch.dtype],
) -> tuple[dict[str, float], bool]:
    """Train and validate epoch ``state.epoch + 1`` and update ``state``; return its row and whether it improved."""
    t0 = time.perf_counter()
    train_loader, val_loader = loaders
    train_loader.sampler.set_epoch(state.epoch)  # type: ignore[attr-defined]
    train_loader.generator.manual_seed(D.epoch_seed(cfg.seed, state.epoch) + 7919 * ctx.rank)  # type: ignore[union-attr]
    bar = progress_bar(cfg.progress and ctx.is_main, len(train_loader), f"epoch {state.epoch + 1}/{cfg.epochs}")
    try:
        train_loss, train_dice = train_epoch(
            parts.train_model or parts.net, parts.net, train_loader, parts.optimizer, parts.scaler, cfg.loss_fn,
            ctx=ctx, dtype=dtype, threshold=cfg.threshold, grad_clip=cfg.grad_clip, epoch=state.epoch,
            last_checkpoint=state.last_checkpoint, bar=bar, check_masks=not parts.masks_checked,
        )  # fmt: skip
        parts.masks_checked = True
    finally:
        if bar is not None:
            bar.close()
    # A finite loss does not make finite weights (BatchNorm statistics can overflow while the
    # outputs stay finite); checked before this epoch's checkpoint can keep them.
    bad = non_finite_state(parts.net, ctx)
    if bad:
        raise NonFiniteStateError(state.epoch + 1, bad, state.last_checkpoint)
    val_loss, val_dice = validate(parts.net, val_loader, cfg.loss_fn, ctx=ctx, dtype=dtype, threshold=cfg.threshold)
    if not math.isfinite(val_loss):
        raise NonFiniteLossError(state.epoch + 1, None, val_loss, state.last_checkpoint)
    state.epoch += 1
    lr = float(parts.optimizer.param_groups[0]["lr"])
    if isinstance(parts.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        parts.scheduler.step(val_loss)
    elif parts.scheduler is not None:
        parts.scheduler.step()
    improved = val_loss < state.best_val_loss - cfg.min_delta
    if improved:
        state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in parts.net.state_dict().items()}
    else:
        state.bad_epochs += 1
    epoch_time = time.perf_counter() - t0
    state.train_time += epoch_time
    row = {
        "epoch": state.epoch, "train_loss": train_loss, "train_dice": train_dice, "val_loss": val_loss,
        "val_dice": val_dice, "lr": lr, "epoch_time": epoch_time, "train_time": state.train_time,
    }  # fmt: skip
    state.history.append(row)
    state.stop_reason = _decide_stop(state, cfg, ctx, epoch_time)
    logger.info(
        "epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  lr %.2e  %.1fs%s",
        state.epoch, cfg.epochs, train_loss, train_dice, val_loss, val_dice, lr, epoch_time,
        "  (best)" if improved else "",
    )  # fmt: skip
    return row, improved


def _run_summary(
    cfg: FitConfig, state: TrainState, ctx: D.DistContext, net: nn.Module, test: Optional[dict[str, Any]]
) -> dict[str, Any]:
    """The content of ``metrics.json``: ``run_info``, the training summary, the test summary without per-case rows."""
    summary: dict[str, Any] = dict(cfg.run_info or {})
    summary.update(
        best_epoch=state.best_epoch, best_val_loss=state.best_val_loss, epochs_completed=len(state.history),
        stop_reason=state.stop_reason, train_time_s=state.train_time, world_size=ctx.world_size,
        parameters=sum(p.numel() for p in net.parameters()),
    )  # fmt: skip
    if test is not None:
        summary["test"] = {k: v for k, v in test.items() if k != "per_case"}
    return summary


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
        ValueError: a bad argument, or masks of the first training batch with values outside
            ``[0, 1]`` (e.g. 0/255 masks, label maps with -1); the message gives the range found.
        NonFiniteLossError: the loss became NaN/inf (names epoch and step; checkpoints untouched).
        NonFiniteStateError: parameters or buffers became NaN/inf while the loss stayed finite
            (names the epoch and the tensors; checkpoints untouched). Both are
            :class:`TrainingDivergedError`.
        CheckpointError: the checkpoint to resume from is cut short or damaged.
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set.

    Example:
        >>> from spatialrec import create_model
        >>> from spatialrec.data import synthetic_splits
        >>> train_set, val_set, test_set = synthetic_splits(8, 4, 4, image_size=32)
        >>> model = create_model("sdn_unet", in_channels=1, num_classes=1, depth=2, base_width=4,
        ...                      state_size=4)
        >>> result = fit(model, train_set, val_set, test_data=test_set, epochs=2,
        ...              batch_size=4, out_dir="runs/unet", progress=False)
        >>> 0.0 <= result.test_metrics["dice"]["mean"] <= 1.0
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    train_data, val_data = check_dataset("train_data", train_data), check_dataset("val_data", val_data)
    if test_data is not None:
        test_data = check_dataset("test_data", test_data)
    cfg = FitConfig.from_arguments(
        dict(
            loss_fn=loss_fn, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
            weight_decay=weight_decay, lr_schedule=lr_schedule, patience=patience, min_delta=min_delta,
            grad_clip=grad_clip, amp=amp, amp_dtype=amp_dtype, device=device, seed=seed, out_dir=out_dir,
            resume=resume, overwrite=overwrite, threshold=threshold, time_budget=time_budget,
            num_workers=num_workers, drop_last=drop_last, eval_batch_size=eval_batch_size, hd95=hd95,
            class_names=class_names, sync_batchnorm=sync_batchnorm, restore_best=restore_best,
            progress=progress, on_epoch_end=on_epoch_end, run_info=run_info,
        )
    )  # every setting but the model and the data, checked in one place  # fmt: skip
    ctx = D.setup(cfg.device)
    dtype = resolve_amp_dtype(cfg.amp, cfg.amp_dtype, ctx.device)
    if cfg.progress and ctx.is_main:
        require_tqdm()  # fail now, not after the first epoch
    resume_path = find_resume_checkpoint(cfg.resume, cfg.out_dir, cfg.overwrite)

    seed_everything(cfg.seed + ctx.rank)
    parts = _Parts.build(model, cfg, ctx, dtype)
    state = TrainState()
    if resume_path is not None:
        state = resume_training(
            resume_path, model=parts.net, optimizer=parts.optimizer, scheduler=parts.scheduler, scaler=parts.scaler,
            config=parts.config, rank=ctx.rank, world_size=ctx.world_size, device=ctx.device,
        )  # fmt: skip
        # Decided again with today's settings: a run stopped at its epoch limit goes on with a higher one.
        state.stop_reason = _decide_stop(state, cfg, ctx, state.history[-1]["epoch_time"] if state.history else 0.0)
    parts.wrap(ctx)
    loaders = _loaders(train_data, val_data, cfg, ctx)
    files = RunFiles(cfg.out_dir if ctx.is_main else None)
    files.start(state.history)

    while state.stop_reason is None:
        row, improved = _run_epoch(parts, state, loaders, cfg, ctx, dtype)
        rng = D.all_gather_objects(capture_rng_state(), ctx)
        state.last_checkpoint = files.save_epoch(row, parts.checkpoint(state, rng), improved) or state.last_checkpoint
        D.barrier(ctx)
        if cfg.on_epoch_end is not None:
            cfg.on_epoch_end(dict(row))

    if cfg.restore_best and state.best_weights is not None:
        parts.net.load_state_dict(state.best_weights)
    elif cfg.restore_best and state.history:
        logger.warning("the best weights (epoch %d) are not available; keeping the last weights", state.best_epoch)
    test_metrics = None
    if test_data is not None:
        test_metrics = evaluate(
            parts.net, test_data, batch_size=cfg.eval_batch_size, device=ctx.device, threshold=cfg.threshold,
            loss_fn=cfg.loss_fn, amp=dtype is not None, amp_dtype=dtype, hd95=cfg.hd95,
            class_names=cfg.class_names, num_workers=cfg.num_workers, progress=cfg.progress,
        )  # fmt: skip
    files.finish(_run_summary(cfg, state, ctx, parts.net, test_metrics))
    D.barrier(ctx)
    assert state.stop_reason is not None
    return FitResult(
        history=state.history, best_epoch=state.best_epoch, best_val_loss=state.best_val_loss,
        epochs_completed=len(state.history), stop_reason=state.stop_reason, train_time=state.train_time,
        test_metrics=test_metrics, out_dir=cfg.out_dir,
    )  # fmt: skip


__all__ = ["CSV_COLUMNS", "FitResult", "fit"]
