"""Errors that stop a training run: what went wrong, where, and which checkpoint was kept."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class TrainingDivergedError(FloatingPointError):
    """A run diverged: the loss (:class:`NonFiniteLossError`) or the model's parameters or buffers
    (:class:`NonFiniteStateError`) became NaN or infinite. Training stopped; no checkpoint holds
    the non-finite values.

    Attributes (of both):
        epoch: 1-based epoch in which it happened.
        checkpoint: the last good checkpoint (left untouched), or ``None`` if none was written.
    """

    epoch: int
    checkpoint: Optional[Path]


def _kept(checkpoint: Optional[Path]) -> str:
    return f"the last good checkpoint {checkpoint} was kept" if checkpoint is not None else "no checkpoint had been written yet"


class NonFiniteLossError(TrainingDivergedError):
    """The loss became NaN or infinite; training stopped before the bad step changed any weight.

    Attributes (besides ``epoch`` and ``checkpoint``):
        step: 1-based step within the epoch, or ``None`` when the validation loss was non-finite.
        value: the offending loss value.
    """

    def __init__(self, epoch: int, step: Optional[int], value: float, checkpoint: Optional[Path]) -> None:
        where = f"epoch {epoch}, step {step}" if step is not None else f"epoch {epoch}, validation"
        super().__init__(
            f"non-finite loss ({value}) at {where}; training stopped and {_kept(checkpoint)}. Try a lower learning "
            "rate, gradient clipping (grad_clip) or training without mixed precision."
        )
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint


class NonFiniteStateError(TrainingDivergedError):
    """Parameters or buffers of the model became NaN or infinite although the loss stayed finite.

    Typical of a run diverging under a far too high learning rate: BatchNorm's running variance
    overflows to inf while normalising by it keeps the outputs, and so the loss, finite. Found
    after an epoch's training steps, before that epoch's checkpoint is written.

    Attributes (besides ``epoch``, here the epoch after whose training steps the values were found,
    and ``checkpoint``):
        names: the non-finite tensors (``state_dict`` names), over all processes.
    """

    def __init__(self, epoch: int, names: list[str], checkpoint: Optional[Path]) -> None:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        super().__init__(
            f"the model's parameters or buffers became non-finite (inf/NaN) at epoch {epoch} ({shown}) although "
            f"the loss stayed finite; training stopped and {_kept(checkpoint)}. The run diverged: try a lower "
            "learning rate or gradient clipping (grad_clip)."
        )
        self.epoch, self.names, self.checkpoint = epoch, list(names), checkpoint


__all__ = ["NonFiniteLossError", "NonFiniteStateError", "TrainingDivergedError"]
