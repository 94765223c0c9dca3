"""Importing segmentation_models_pytorch for the interop tests.

smp imports torchvision, and PyPI's torchvision only imports beside a torch build it was made
for; with the CPU build of torch that CI's main environment uses, it cannot import, and the smp
tests skip. CI runs tests/interop a second time in an environment with a matching torch and
torchvision and sets SPATIALREC_REQUIRE_SMP=1 there, so that a failed import fails instead of
skipping.
"""

from __future__ import annotations

import os
import types

import pytest


def import_smp() -> types.ModuleType:
    try:
        import segmentation_models_pytorch
    except Exception as err:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        first_line = str(err).splitlines()[0] if str(err) else ""
        message = (
            f"segmentation_models_pytorch is not importable here ({type(err).__name__}: {first_line}); "
            "it needs a torchvision built for the installed torch (see docs/interop.md)"
        )
        if os.environ.get("SPATIALREC_REQUIRE_SMP"):
            pytest.fail(message)
        pytest.skip(message)
    return segmentation_models_pytorch
