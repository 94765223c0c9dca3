"""Errors that stop a training run: what went wrong, where, and which checkpoint was kept."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def _kept(checkpoint: Optional[Path]) -> str:
    if checkpoint is not None:
        return f"the last good checkpoint {checkpoint} was kept"
    return "no checkpoint had been written yet"


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
        super().__init__(
            f"non-finite loss ({value}) at {where}; training stopped and {_kept(checkpoint)}. Try a lower learning "
            "rate, gradient clipping (grad_clip) or training without mixed precision."
        )
        self.epoch = epoch
        self.step = step
        self.value = value
        self.checkpoint = checkpoint


__all__ = ["NonFiniteLossError"]
