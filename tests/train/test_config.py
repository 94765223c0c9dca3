"""FitConfig: a wrong type is a TypeError, a wrong value a ValueError, each naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from spatialrec.train import FitConfig, FitResult


@pytest.mark.parametrize(
    "name,value,error,message",
    [
        ("seed", "1", TypeError, "seed must be an int, got str '1'"),
        ("seed", 1.5, TypeError, "seed must be an int, got float 1.5"),
        ("seed", True, TypeError, "seed must be an int, got bool True"),
        ("seed", -1, ValueError, "seed must be >= 0, got -1"),
        ("optimizer", 1, TypeError, "optimizer must be a string.*got int 1"),
        ("lr_schedule", None, TypeError, "lr_schedule must be a string.*got NoneType None"),
        ("optimizer", "sgd", ValueError, "optimizer='sgd' is not supported"),
        ("threshold", "0.5", TypeError, "threshold must be a number, got str '0.5'"),
        ("threshold", 1.0, ValueError, r"threshold must be in \(0.0, 1.0\), got 1.0"),
    ],
)
def test_bad_settings_raise_the_promised_error(name: str, value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FitConfig.from_arguments({name: value})


def test_numpy_integers_are_accepted_and_unknown_names_refused() -> None:
    cfg = FitConfig.from_arguments({"seed": np.int64(3), "epochs": np.int32(2), "batch_size": np.uint8(4)})
    assert cfg.seed == 3 and cfg.epochs == 2 and cfg.eval_batch_size == 4
    # stored as Python ints: a checkpoint's settings must load with weights_only=True
    assert type(cfg.seed) is int and type(cfg.epochs) is int and type(cfg.eval_batch_size) is int
    with pytest.raises(TypeError, match=r"unknown fit settings \['epoch'\]"):
        FitConfig.from_arguments({"epoch": 3})


def test_fit_result_has_no_unused_extra() -> None:
    assert "extra" not in FitResult.__dataclass_fields__
