"""Training checkpoints: written atomically, checked on load, holding everything a resume needs.

A checkpoint is one ``torch.save`` file holding a dict with:

- ``"format"``: :data:`CHECKPOINT_FORMAT`, so that a foreign file is recognised as such;
- ``"model"``, ``"optimizer"``, ``"scheduler"``, ``"scaler"``: the ``state_dict`` of each
  (``"scheduler"``/``"scaler"`` may be ``None``);
- ``"epoch"``: the number of epochs completed;
- ``"early_stopping"``: ``{"best_val_loss", "best_epoch", "bad_epochs"}``;
- ``"rng"``: one RNG snapshot per process (:func:`capture_rng_state`), in rank order;
- ``"history"``: the per-epoch metric rows so far; ``"train_time"``: seconds spent training;
- ``"config"``: the settings of the run, compared on resume.

Files are written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a run killed while saving leaves the previous checkpoint intact. A file cut short or
damaged by other means is reported by :func:`load_checkpoint` as a :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

CHECKPOINT_FORMAT = "spatialrec.train/1"
"""Value of the ``"format"`` key of every checkpoint written by :func:`save_checkpoint`."""

REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "early_stopping", "rng", "history", "config")

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, cut short, damaged, or not a spatialrec training checkpoint."""


def save_checkpoint(state: dict[str, Any], path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Args:
        state: the checkpoint dict (see the module docstring); ``"format"`` is filled in.
        path: destination file; its folder is created if needed.

    Returns:
        The destination path.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "format": CHECKPOINT_FORMAT}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable; not every platform lets a folder be opened.
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def load_checkpoint(path: PathLike, map_location: "str | torch.device" = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Loaded with ``weights_only=True``: a checkpoint holds only tensors and plain Python values.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is cut short or damaged, is not a spatialrec training
            checkpoint, or lacks a required entry. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports a truncated zip, a bad pickle, ... with varied types
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) could not be read; it is probably cut short or damaged "
            f"(e.g. a copy that did not finish). Delete it to start over, or resume from another "
            f"checkpoint. Reader said: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a spatialrec training checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; it is incomplete")
    return state


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


__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]
