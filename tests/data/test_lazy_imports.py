"""Importing spatialrec (and spatialrec.data) must not import Pillow, nibabel, scipy or MONAI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_import_does_not_pull_optional_dependencies():
    src = str(Path(__file__).resolve().parents[2] / "src")
    code = (
        "import sys, spatialrec, spatialrec.data, spatialrec.metrics, spatialrec.losses\n"
        "bad = [m for m in ('PIL', 'nibabel', 'scipy', 'monai') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": src}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
