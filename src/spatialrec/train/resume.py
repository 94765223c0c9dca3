"""Resuming a run: where a run stands (:class:`TrainState`), the checkpoint dict that records it,
which checkpoint a run continues from, and putting model, optimiser, schedule, scaler and random
streams back as they were after that checkpoint's epoch.

The checkpoint format itself (schema, checksum, atomic save, checked load) is in
:mod:`spatialrec.train.checkpoint`; the random generators' snapshots in :mod:`spatialrec.train.rng`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, CheckpointError, load_checkpoint
from .rng import restore_rng_state

logger = logging.getLogger("spatialrec.train")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class TrainState:
    """Where a run stands after its last completed epoch: what a checkpoint stores and a resume restores.

    Attributes:
        epoch: epochs completed.
        history: one metric row per completed epoch.
        best_val_loss, best_epoch: the lowest validation loss so far and its 1-based epoch
            (``inf`` and 0 before the first epoch).
        bad_epochs: epochs since the last improvement (early stopping).
        train_time: seconds spent in training and validation epochs.
        best_weights: a CPU copy of the best epoch's weights, when known.
        last_checkpoint: the newest checkpoint written or resumed from (kept when a run stops
            on a non-finite loss).
        stop_reason: why the run stops, or ``None`` while it goes on.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_time: float = 0.0
    best_weights: Optional[dict[str, torch.Tensor]] = None
    last_checkpoint: Optional[Path] = None
    stop_reason: Optional[str] = None


def find_resume_checkpoint(resume: "Union[bool, PathLike, None]", out_dir: Optional[Path], overwrite: bool) -> Optional[Path]:
    """The checkpoint a run continues from, or ``None`` for a fresh run.

    Args:
        resume: ``True`` (``out_dir/last.pt``), a checkpoint path, or ``False``/``None``.
        out_dir: the run's folder (``None``: nothing is written).
        overwrite: a fresh run may replace the run in ``out_dir``.

    Raises:
        FileNotFoundError: the checkpoint to resume from does not exist.
        FileExistsError: a fresh run would replace a run in ``out_dir`` without ``overwrite``.
    """
    path: Optional[Path] = None
    if resume is True:
        if out_dir is None:
            raise ValueError("resume=True needs out_dir (it continues from out_dir/last.pt)")
        path = out_dir / LAST_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"resume=True but {path} does not exist; nothing to resume (drop --resume to start)")
    elif resume not in (False, None):
        path = Path(resume)  # type: ignore[arg-type]
        if not path.is_file():
            raise FileNotFoundError(f"resume={str(resume)!r}: checkpoint file does not exist")
    if out_dir is not None and path is None and not overwrite and (out_dir / LAST_CHECKPOINT).exists():
        raise FileExistsError(
            f"{out_dir} already holds a run ({LAST_CHECKPOINT}); pass resume=True to continue it, "
            "overwrite=True to replace it, or choose another out_dir"
        )
    return path


def training_checkpoint(
    state: TrainState,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[Any],
    scaler: Optional[torch.amp.GradScaler],
    rng: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict of ``state`` (the schema is in :mod:`spatialrec.train.checkpoint`), ready for
    :func:`~spatialrec.train.checkpoint.save_checkpoint`.

    ``rng`` holds one :func:`~spatialrec.train.rng.capture_rng_state` snapshot per process, in rank order.
    """
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": state.epoch,
        "early_stopping": {"best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs},
        "rng": rng,
        "history": state.history,
        "train_time": state.train_time,
        "stop_reason": state.stop_reason,
        "config": config,
    }


def resume_training(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[Any],
    scaler: torch.amp.GradScaler,
    config: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    device: "str | torch.device" = "cpu",
) -> TrainState:
    """Put a run back as it was after the epoch saved in ``path``.

    Loads the checkpoint into ``model``, ``optimizer``, ``scheduler`` and ``scaler``, restores
    this process's random streams, and reads the best epoch's weights from ``best.pt`` beside
    it (when that file holds the epoch the checkpoint names as best). Settings that differ from
    ``config`` are listed in a warning. ``stop_reason`` is left for the caller to decide with
    today's settings (a run stopped at its epoch limit goes on when resumed with a higher one).

    Raises:
        CheckpointError: the file is damaged or not a training checkpoint, or its weights do
            not fit ``model``.
    """
    ckpt = load_checkpoint(path, map_location=device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model (entry 'model'): {err}") from err
    _restore(path, "optimizer", optimizer.load_state_dict, ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        _restore(path, "scheduler", scheduler.load_state_dict, ckpt["scheduler"])
    if ckpt.get("scaler") is not None:
        _restore(path, "scaler", scaler.load_state_dict, ckpt["scaler"])
    es = ckpt["early_stopping"]
    state = TrainState(
        epoch=int(ckpt["epoch"]), history=list(ckpt["history"]), best_val_loss=float(es["best_val_loss"]),
        best_epoch=int(es["best_epoch"]), bad_epochs=int(es["bad_epochs"]),
        train_time=float(ckpt.get("train_time", 0.0)), last_checkpoint=path,
    )  # fmt: skip
    changed = {k: (ckpt["config"].get(k), v) for k, v in config.items() if ckpt["config"].get(k) != v}
    if changed:
        logger.warning("resuming %s with changed settings (checkpoint -> now): %s", path, changed)
    rngs = ckpt["rng"]
    if len(rngs) != world_size:
        logger.warning(
            "checkpoint %s was written by %d process(es), this run has %d; the random streams will "
            "not continue exactly", path, len(rngs), world_size,
        )  # fmt: skip
    _restore(path, "rng", restore_rng_state, rngs[min(rank, len(rngs) - 1)])
    state.best_weights = _best_weights(path, state.best_epoch)
    logger.info("resumed from %s after epoch %d", path, state.epoch)
    return state


def _restore(path: Path, key: str, load: Any, value: Any) -> None:
    """``load(value)``, with any failure reported as a :class:`CheckpointError` naming ``path`` and ``key``."""
    try:
        load(value)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint {path}: entry {key!r} does not fit this run ({type(err).__name__}: {err}); "
            "was it written by another model, optimiser or version?"
        ) from err


def _best_weights(last: Path, best_epoch: int) -> Optional[dict[str, torch.Tensor]]:
    """The weights in ``best.pt`` beside ``last`` if it holds ``best_epoch``, else ``None`` (with a warning)."""
    best_file = last.with_name(BEST_CHECKPOINT)
    if best_epoch <= 0 or not best_file.is_file():
        return None
    try:
        best = load_checkpoint(best_file, map_location="cpu")
    except CheckpointError as err:
        logger.warning("%s", err)
        return None
    if int(best["epoch"]) != best_epoch:
        logger.warning(
            "%s holds epoch %s, not the best epoch %d recorded in %s; it is rewritten when "
            "that epoch's result is reached again", best_file, best["epoch"], best_epoch, last,
        )  # fmt: skip
        return None
    return best["model"]


__all__ = [
    "TrainState",
    "find_resume_checkpoint",
    "resume_training",
    "training_checkpoint",
]
