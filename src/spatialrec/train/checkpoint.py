"""Training checkpoints: written atomically, checked on load, holding everything a resume needs.

A checkpoint is one ``torch.save`` file holding a dict with:

- ``"format"``: :data:`CHECKPOINT_FORMAT`, so that a foreign file is recognised as such;
- ``"model"``, ``"optimizer"``, ``"scheduler"``, ``"scaler"``: the ``state_dict`` of each
  (``"scheduler"``/``"scaler"`` may be ``None``);
- ``"epoch"``: the number of epochs completed;
- ``"early_stopping"``: ``{"best_val_loss", "best_epoch", "bad_epochs"}``;
- ``"rng"``: one RNG snapshot per process (:func:`spatialrec.train.rng.capture_rng_state`), in rank order;
- ``"history"``: the per-epoch metric rows so far; ``"train_time"``: seconds spent training;
- ``"config"``: the settings of the run, compared on resume;
- ``"checksum"``: ``{"algorithm": "sha256", "digest": hex}`` over everything above
  (:func:`content_digest`), so that damage inside the file is found on load.

Files are replaced atomically (:func:`spatialrec.io.atomic_write`), so a run killed while saving
leaves the previous checkpoint intact. :func:`load_checkpoint` reports a file cut short or damaged
inside as a :class:`CheckpointError` that points to the other checkpoint of the run when that one
is good. Checkpoints of format ``spatialrec.train/1`` (written before checksums) still load,
unverified, with a warning. Resuming from a checkpoint is :mod:`spatialrec.train.resume`; the RNG
snapshots are :mod:`spatialrec.train.rng`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import torch

from ..io import atomic_torch_save, temp_path

# Re-exported: these lived here before the writer moved to spatialrec.io and the RNG snapshots
# to spatialrec.train.rng; code importing them from here keeps working.
from ..io import atomic_write as atomic_write
from ..io import write_error as write_error
from .rng import capture_rng_state as capture_rng_state
from .rng import restore_rng_state as restore_rng_state

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
    are filled in) to ``path`` with :func:`~spatialrec.io.atomic_write`, creating its folder; return ``path``.

    Raises:
        OSError: writing failed, as in :func:`~spatialrec.io.atomic_write`; the previous file at ``path`` is intact.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    state = {**state, "format": CHECKPOINT_FORMAT}
    state["checksum"] = {"algorithm": "sha256", "digest": content_digest(state)}
    what = f"the checkpoint (through {temp_path(path).name}; the previous {path.name}, if any, is intact)"
    return atomic_torch_save(state, path, what)


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


_MOVED_TO_RESUME = ("TrainState", "find_resume_checkpoint", "resume_training", "training_checkpoint")


def __getattr__(name: str) -> Any:
    # The resume logic moved to spatialrec.train.resume, which imports this module; importing
    # it here on first use keeps `from spatialrec.train.checkpoint import TrainState` working
    # without an import cycle.
    if name in _MOVED_TO_RESUME:
        from . import resume

        return getattr(resume, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "LAST_CHECKPOINT",
    "REQUIRED_KEYS",
    "content_digest",
    "load_checkpoint",
    "save_checkpoint",
]
