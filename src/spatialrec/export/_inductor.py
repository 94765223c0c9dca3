"""The one place where :mod:`spatialrec.export` uses private torch API: inductor's lowering of
``aten.convolution_backward``, swapped for its ATen fallback for as long as a context is open.

Why private. Inductor's lowering of ``aten.convolution_backward`` guards the gradient's strides
to integers (``torch/_inductor/kernel/conv.py``, ``convolution_backward_lowering``), so a
compiled training step of any convolutional network recompiles for every image size. Inductor
has no public switch for one op's lowering (``torch.compile(options=...)`` sets its config, not
its lowering table), so the only way to keep that backward dynamic is to change the table
(``torch._inductor.lowering.lowerings``) while inductor compiles. The context below changes it
and puts back exactly what was there when it closes; nothing else of inductor's state is
touched (the fallback handler is built into a private dict, not registered).

Gated on the torch version: the internals were read on torch 2.13 and 2.14; an older torch
raises, a newer one is used only if the same internals are still there (checked by name, a
``RuntimeError`` otherwise, never a silently different compilation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# The first torch whose inductor internals (lowering table, fallback handler, the AOT
# backward-lowering switch) were checked for this.
MIN_TORCH = "2.13"

# Included in the key of inductor's and AOT autograd's caches while the context is open: a graph
# compiled with the fallback must not be served from the cache to a plain torch.compile (nor a
# plain one to compile_dynamic); the caches do not key on the lowering table.
CACHE_TAG = "spatialrec.compile_dynamic:convolution_backward=aten"


def _internals() -> tuple[Any, Any]:
    """``(lowerings, fallback lowering of aten.convolution_backward)``, or a ``RuntimeError``."""
    version = torch.__version__
    if version < MIN_TORCH:  # TorchVersion compares with version strings
        raise RuntimeError(
            f"compile_dynamic needs torch >= {MIN_TORCH} (its inductor internals were checked from "
            f"there), this is torch {version}; use torch.compile directly (one graph per training size)"
        )
    try:
        from torch._inductor import lowering

        op = torch.ops.aten.convolution_backward.default
        table: dict[Any, Any] = {}
        # Build the wrapped fallback exactly as inductor's make_fallback would, into a dict of
        # our own: registering it would change inductor's table for good.
        lowering.register_lowering(op, type_promotion_kind=None, lowering_dict=table)(
            lowering.fallback_handler(op, add_to_fallback_set=False)
        )
        handler = table[op]
        lowerings = lowering.lowerings
        if not isinstance(lowerings, dict) or op not in lowerings:
            raise TypeError("inductor has no lowering table entry for aten.convolution_backward")
        if not hasattr(torch._functorch.config, "force_non_lazy_backward_lowering"):
            raise AttributeError("torch._functorch.config.force_non_lazy_backward_lowering")
    except (ImportError, AttributeError, TypeError, KeyError, AssertionError) as e:
        raise RuntimeError(
            f"compile_dynamic cannot set inductor's convolution backward fallback on torch {version} "
            f"({type(e).__name__}: {e}); use torch.compile directly (one graph per training size)"
        ) from e
    return lowerings, handler


def check_supported() -> None:
    """Raise ``RuntimeError`` now if this torch lacks the internals :func:`conv_backward_fallback` uses."""
    _internals()


@contextlib.contextmanager
def conv_backward_fallback() -> Iterator[None]:
    """While open, inductor lowers ``aten.convolution_backward`` to its ATen fallback (the kernel
    eager calls), compiles a backward graph together with its forward (so the backward, too, is
    compiled while the context is open, not lazily at the first ``.backward()``), and keys its
    caches apart from other compilations. On exit inductor's own lowering is back.

    Re-entrant (each level restores what it found). Process-wide while open: another thread
    compiling at the same moment would see the fallback too.
    """
    lowerings, handler = _internals()
    op = torch.ops.aten.convolution_backward.default
    found = lowerings[op]
    tag = torch.compiler.config.cache_key_tag
    lowerings[op] = handler
    torch.compiler.config.cache_key_tag = f"{tag}+{CACHE_TAG}" if tag else CACHE_TAG
    try:
        with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
            yield
    finally:
        torch.compiler.config.cache_key_tag = tag
        lowerings[op] = found
