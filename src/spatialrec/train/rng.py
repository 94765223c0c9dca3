"""The global random generators of a process, captured and restored (what a resume needs to
continue the random streams exactly).

A snapshot holds plain types and tensors only, so that checkpoints holding it load with
``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the global random generators: torch (CPU and every CUDA device), Python, NumPy.

    Returns:
        ``{"torch": uint8 tensor, "python": random.getstate(), "numpy": (name, int64 keys (624,),
        pos, has_gauss, cached), ["cuda": one uint8 tensor per device]}``.
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
    """Put the global random generators back to a snapshot from :func:`capture_rng_state`.

    The CUDA generators are restored only when the snapshot has one state per visible device.
    """
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


__all__ = ["capture_rng_state", "restore_rng_state"]
