"""renamed_argument: the old keyword works for one minor version, with a FutureWarning naming the new one."""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch

import spatialrec.deprecation
from spatialrec.deprecation import renamed_argument


class Up(torch.nn.Module):
    @renamed_argument("bilinear", "upsample", since="0.3", removed_in="0.4",
                      convert=lambda b: "interpolate" if b else "transposed")  # fmt: skip
    def __init__(self, channels: int, upsample: str = "interpolate") -> None:
        """Doc kept."""
        super().__init__()
        self.upsample = upsample


def test_old_keyword_warns_and_is_converted() -> None:
    with pytest.warns(FutureWarning, match=r"Up: bilinear= is deprecated since 0\.3 and is removed in 0\.4; "
                      r"use upsample='transposed' instead") as seen:  # fmt: skip
        up = Up(4, bilinear=False)
    assert up.upsample == "transposed"
    assert seen[0].filename == __file__  # points at the caller's line, not at the library


def test_new_keyword_and_positional_calls_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    assert Up(4, upsample="transposed").upsample == "transposed"
    assert Up(4, "interpolate").upsample == "interpolate"
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_both_names_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"Up: got both bilinear= \(deprecated\) and upsample="):
        Up(4, bilinear=True, upsample="interpolate")


def test_signature_and_docstring_are_kept() -> None:
    assert list(inspect.signature(Up.__init__).parameters) == ["self", "channels", "upsample"]
    assert Up.__init__.__doc__ == "Doc kept."


def test_same_name_is_refused() -> None:
    with pytest.raises(ValueError, match="same name 'x'"):
        renamed_argument("x", "x", since="0.3", removed_in="0.4")


def test_docstring_example_runs() -> None:
    result = doctest.testmod(spatialrec.deprecation, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
