"""spatialrec.train.rng: a snapshot restores torch, Python and NumPy streams exactly."""

from __future__ import annotations

import random

import numpy as np
import torch

from spatialrec.train.rng import capture_rng_state, restore_rng_state


def _draw() -> tuple[list[float], float, list[float]]:
    return torch.rand(3).tolist(), random.random(), np.random.rand(3).tolist()


def test_restore_continues_every_stream() -> None:
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    state = capture_rng_state()
    first = _draw()
    assert _draw() != first
    restore_rng_state(state)
    assert _draw() == first


def test_snapshot_holds_only_loadable_types(tmp_path) -> None:
    # weights_only loading (how checkpoints are read) accepts tensors and plain values only
    path = tmp_path / "rng.pt"
    torch.save(capture_rng_state(), path)
    loaded = torch.load(path, weights_only=True)
    restore_rng_state(loaded)
    assert loaded["numpy"][0] == "MT19937" and loaded["numpy"][1].dtype == torch.int64
