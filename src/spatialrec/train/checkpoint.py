"""Training checkpoints: written atomically, checked on load, holding everything a resume needs.

A checkpoint is one ``torch.save`` file holding a dict with:

- ``"format"``: :data:`CHECKPOINT_FORMAT`, so that a foreign file is recognised as such;
- ``"model"``, ``"optimizer"``, ``"scheduler"``, ``"scaler"``: the ``state_dict`` of each
  (``"scheduler"``/``"scaler"`` may be ``None``);
- ``"epoch"``: the number of epochs completed;
- ``"early_stopping"``: ``{"best_val_loss", "best_epoch", "bad_epochs"}``;
- ``"rng"``: one RNG snapshot per process (:func:`capture_rng_state`), in rank order;
- ``"history"``: the per-epoch metric rows so far; ``"train_time"``: seconds spent training;
- ``"config"``: the settings of the run, compared on resume;
- ``"checksum"``: ``{"algorithm": "sha256", "digest": hex}`` over everything above
  (:func:`content_digest`), so that damage inside the file is found on load.

Files are replaced atomically (:func:`atomic_write`), so a run killed while saving leaves the
previous checkpoint intact. :func:`load_checkpoint` reports a file cut short or damaged inside
as a :class:`CheckpointError` that points to the other checkpoint of the run when that one is
good. Checkpoints of format ``spatialrec.train/1`` (written before checksums) still load,
unverified, with a warning. :func:`find_resume_checkpoint` and :func:`resume_training` put a
run back as it was after a checkpoint's epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

CHECKPOINT_FORMAT = "spatialrec.train/2"
"""Value of the ``"format"`` key of every checkpoint written by :func:`save_checkpoint`."""

_UNVERIFIED_FORMATS = ("spatialrec.train/1",)  # written before checksums: loaded unchecked, with a warning

REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "early_stopping", "rng", "history", "config")

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"

logger = logging.getLogger("spatialrec.train")

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, cut short, damaged, or not a spatialrec training checkpoint."""


def write_error(err: OSError, path: Path, what: str) -> OSError:
    """``err`` (e.g. ENOSPC, a full disk) again, naming ``path`` and what was being written.

    The result keeps ``errno`` and has ``filename == str(path)``.
    """
    reason = err.strerror or str(err) or type(err).__name__
    message = f"{reason} while writing {what}"
    if err.errno is None:
        out = OSError(f"{message}: {str(path)!r}")
        out.filename = str(path)
        return out
    return OSError(err.errno, message, str(path))


def atomic_write(path: Path, write: Callable[[IO[Any]], object], what: str, mode: str = "wb") -> Path:
    """``write(f)`` to ``.<name>.tmp-<pid>`` beside ``path``, flushed to disk, then renamed over ``path``.

    A reader sees the old file or the new one, never a part; the folder is created if needed.

    Raises:
        OSError: writing failed (e.g. ``ENOSPC``, a full disk); it keeps its ``errno`` and names
            ``path`` and ``what`` (:func:`write_error`); the previous file at ``path`` is intact.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "b" not in mode
        with open(tmp, mode, encoding="utf-8" if text else None, newline="" if text else None) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):  # a full disk, a lost mount...: say which file
            raise write_error(err, path, what) from err
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not every platform lets a folder be opened
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` to ``h`` in a canonical, type-tagged byte form (tensors by dtype, shape and raw bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the bytes in place, no copy
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key, value in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):  # a tuple may come back as a list: the same content
        h.update(f"L{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"B{obj}".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj}".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()}".encode())
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode() + data)
    else:  # torch.dtype, torch.device, ...: what weights_only loading allows has a stable repr
        h.update(f"R{type(obj).__name__}:{obj!r}".encode())


def content_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, its ``"checksum"`` entry left out.

    Computed over the values, not the file: tensors by dtype, shape and raw bytes, plain values
    by type and exact value, dict entries in sorted key order. So it is the same before
    ``torch.save`` and after ``torch.load`` and changes with any tensor byte or value.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: PathLike) -> Path:
    """Write the checkpoint dict ``state`` (see the module docstring; ``"format"`` and ``"checksum"``
    are filled in) to ``path`` with :func:`atomic_write`, creating its folder; return ``path``.

    Raises:
        OSError: writing failed, as in :func:`atomic_write`; the previous file at ``path`` is intact.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    state = {**state, "format": CHECKPOINT_FORMAT}
    state["checksum"] = {"algorithm": "sha256", "digest": content_digest(state)}
    what = f"the checkpoint (through .{path.name}.tmp-{os.getpid()}; the previous {path.name}, if any, is intact)"
    return atomic_write(path, lambda f: torch.save(state, f), what)


def _read(path: Path, map_location: "str | torch.device") -> dict[str, Any]:
    """Load and verify ``path``; raise :class:`CheckpointError` saying what failed (without alternatives)."""
    size = path.stat().st_size
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports a truncated zip, a bad pickle, ... with varied types
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) could not be read; it is probably cut short or damaged "
            f"(e.g. a copy that did not finish). Reader said: {type(err).__name__}: {err}"
        ) from err
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found in _UNVERIFIED_FORMATS:
        logger.warning("checkpoint %s has format %r, written before checksums: it is loaded unverified", path, found)
    elif found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a spatialrec training checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    else:
        stored = state.get("checksum")
        if not isinstance(stored, Mapping) or stored.get("algorithm") != "sha256" or not isinstance(stored.get("digest"), str):
            raise CheckpointError(f"checkpoint {path} lacks its 'checksum' entry (or it is malformed); it is damaged")
        digest = content_digest(state)
        if digest != stored["digest"]:
            raise CheckpointError(
                f"checkpoint {path} is damaged: the sha256 checksum of its content ({digest[:16]}...) does not "
                f"match the one stored when it was written ({stored['digest'][:16]}...); a tensor or value in "
                "it changed after it was saved (disk or copy error)"
            )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; it is incomplete")
    _check_entries(path, state)
    return state


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_list_of(v: object, ok: Callable[[Mapping], bool]) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(r, Mapping) and ok(r) for r in v)


_ENTRY_CHECKS: dict[str, tuple[Any, str]] = {
    "model": (
        lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items()),
        "a state_dict (a dict of names to tensors)",
    ),
    "optimizer": (
        lambda v: isinstance(v, Mapping) and isinstance(v.get("state"), Mapping) and isinstance(v.get("param_groups"), (list, tuple)),
        "an optimizer state_dict (a dict with 'state' and 'param_groups')",
    ),
    "scheduler": (lambda v: v is None or isinstance(v, Mapping), "None or a scheduler state_dict"),
    "scaler": (lambda v: v is None or isinstance(v, Mapping), "None or a gradient-scaler state_dict"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "early_stopping": (
        lambda v: isinstance(v, Mapping) and _is_number(v.get("best_val_loss")) and _is_int(v.get("best_epoch"))
        and _is_int(v.get("bad_epochs")),
        "a dict with 'best_val_loss' (number), 'best_epoch' and 'bad_epochs' (ints)",
    ),
    "rng": (
        lambda v: _is_list_of(v, lambda r: {"torch", "python", "numpy"} <= set(r)) and len(v) > 0,
        "a non-empty list of RNG snapshots (dicts with 'torch', 'python', 'numpy')",
    ),
    "history": (
        lambda v: _is_list_of(v, lambda r: _is_number(r.get("epoch_time"))),
        "a list of metric rows (dicts with a number 'epoch_time')",
    ),
    "train_time": (_is_number, "a number of seconds"),
    "config": (lambda v: isinstance(v, Mapping), "a dict of settings"),
}  # fmt: skip


def _check_entries(path: Path, state: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming the first entry of ``state`` that does not have the expected form."""
    for key, (ok, expected) in _ENTRY_CHECKS.items():
        if key in state and not ok(state[key]):
            got = repr(state[key])
            got = got if len(got) <= 80 else got[:77] + "..."
            raise CheckpointError(
                f"checkpoint {path}: entry {key!r} is malformed: expected {expected}, got {type(state[key]).__name__} {got}"
            )


def _alternative(path: Path) -> str:
    """A sentence naming the other checkpoint of the run if it passes its checks, else saying there is none."""
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        other = path.with_name(name)
        if other.name == path.name or not other.is_file():
            continue
        try:
            epoch = _read(other, "cpu")["epoch"]
        except (CheckpointError, OSError):
            continue
        return (
            f" The checkpoint {other} (epoch {epoch}) passes its checks: resume from it "
            f"(fit(..., resume={str(other)!r})), or delete {path.name} to start over."
        )
    return f" There is no other good checkpoint ({LAST_CHECKPOINT} / {BEST_CHECKPOINT}) beside it; delete it to start over."


def load_checkpoint(path: PathLike, map_location: "str | torch.device" = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Loaded with ``weights_only=True``: a checkpoint holds only tensors and plain Python values.
    Its content is verified against the stored sha256 checksum.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is cut short or damaged (its checksum does not match), is not
            a spatialrec training checkpoint, or lacks a required entry. The message names the
            file, says what failed, and names the other checkpoint of the run (``best.pt`` /
            ``last.pt`` beside it) if that one is good.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return _read(path, map_location)
    except CheckpointError as err:
        raise CheckpointError(str(err) + _alternative(path)) from err.__cause__


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the global random generators: torch (CPU and every CUDA device), Python, NumPy.

    Stored with plain types only, so that checkpoints load with ``weights_only=True``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the global random generators back to a snapshot from :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


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
    """The checkpoint dict of ``state`` (see the module docstring), ready for :func:`save_checkpoint`.

    ``rng`` holds one :func:`capture_rng_state` snapshot per process, in rank order.
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
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "LAST_CHECKPOINT",
    "TrainState",
    "atomic_write",
    "capture_rng_state",
    "content_digest",
    "find_resume_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "resume_training",
    "save_checkpoint",
    "training_checkpoint",
    "write_error",
]
