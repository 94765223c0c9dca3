"""Importing nnU-Net v2 for the nnU-Net integration tests.

nnunetv2 needs torchvision, which does not import beside the CPU build of torch of CI's main
environment, and it is not in the ``dev`` extra: there these tests skip. CI installs nnunetv2 in
its second environment (torch 2.14.1 + torchvision 0.29.1) and sets SPATIALREC_REQUIRE_NNUNET=1
there, so that a failed import fails instead of skipping.
"""

from __future__ import annotations

import os
import types

import pytest


def import_nnunet() -> types.ModuleType:
    """``spatialrec.integrations.nnunet``, after checking that nnunetv2 itself imports."""
    try:
        import nnunetv2.utilities.get_network_from_plans  # noqa: F401

        from spatialrec.integrations import nnunet
    except Exception as err:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        first_line = str(err).splitlines()[0] if str(err) else ""
        message = (
            f"nnU-Net v2 is not importable here ({type(err).__name__}: {first_line}); "
            "install the 'nnunet' extra beside a torch whose torchvision imports (see docs/nnunet.md)"
        )
        if os.environ.get("SPATIALREC_REQUIRE_NNUNET"):
            pytest.fail(message)
        pytest.skip(message)
    return nnunet
