"""The docstring examples of spatialrec.integrations.nnunet, run where nnU-Net v2 imports.

tests/test_docs.py runs every docstring example of the package, but skips this module in CI's
main environment (no nnU-Net there); CI's second environment runs only tests/interop, with
SPATIALREC_REQUIRE_NNUNET=1, so here these examples run (or fail) instead of skipping.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from pathlib import Path

import pytest
import torch

from ._nnunet import import_nnunet

pytestmark = pytest.mark.nnunet


def test_nnunet_docstring_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nnunet = import_nnunet()
    # A package: the examples live in its modules (networks.py, ...), which the finder must be
    # given one by one (it skips objects a module only re-exports).
    modules = [nnunet] + [importlib.import_module(f"{nnunet.__name__}.{m.name}") for m in pkgutil.iter_modules(nnunet.__path__) if m.name != "__main__"]
    tests = [t for mod in modules for t in doctest.DocTestFinder().find(mod, mod.__name__) if t.examples]
    assert tests, "spatialrec.integrations.nnunet has docstring examples (SDNPlainConvUNet's)"
    monkeypatch.chdir(tmp_path)
    failures = []
    for test in tests:
        torch.manual_seed(0)
        out = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        if runner.run(test, out=out.write).failed:
            failures.append(out.getvalue())
    assert not failures, "\n".join(failures)
