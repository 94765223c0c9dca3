"""Without a GPU, the Triton kernels run in the Triton interpreter, which must be switched on
before ``triton`` is first imported (its own library functions are created as interpreter
objects or as compilable kernels at import): hence here, before any test module of this
directory imports it. The ahead-of-time compile tests are unaffected: they compile in fresh
worker processes without the interpreter (``spatialrec.ops.aot.compile_matrix``)."""

from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
