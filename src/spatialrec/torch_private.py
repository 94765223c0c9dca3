"""The one place where spatialrec reads private torch API, for what torch offers no public way to do.

Each use is one function here, with a comment saying why no public API serves and a check of the
layout it relies on, so that a torch release that changes it fails here, with a message, instead
of silently giving a wrong answer somewhere else. Bottom level: imports only torch.

(The registered scan operator's dispatch-key guard, :mod:`spatialrec.ops.library`, and the fused
kernel's view check of its incoming gradient, :mod:`spatialrec.ops.fused`, are the other uses.)
"""

from __future__ import annotations

import re

import torch
from torch import nn

TORCH_VERSION: tuple[int, int] = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])  # type: ignore[assignment]
"""``(major, minor)`` of the installed torch."""

# Where nn.Module keeps the hooks registered on one module (torch 2.0 to 2.13, checked).
_MODULE_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_module_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward, forward-pre, backward or backward-pre hooks registered on it
    (the process-wide hooks of ``torch.nn.modules.module.register_module_*`` are not counted).

    Why private: ``register_*_hook`` return removable handles, but torch (2.0-2.13) has no public
    way to ask a module which hooks it holds; ``nn.Module`` keeps them in four dicts.

    Raises:
        RuntimeError: this torch keeps module hooks elsewhere (the check cannot be made).

    Example:
        >>> conv = nn.Conv2d(1, 1, 1)
        >>> handle = conv.register_forward_hook(lambda m, i, o: o)
        >>> has_module_hooks(conv)
        True
        >>> handle.remove(); has_module_hooks(conv)
        False
    """
    dicts = [getattr(module, name, None) for name in _MODULE_HOOK_DICTS]
    if not all(isinstance(d, dict) for d in dicts):
        raise RuntimeError(
            f"torch {torch.__version__} keeps a module's hooks elsewhere than nn.Module.{'/'.join(_MODULE_HOOK_DICTS)}; "
            "spatialrec cannot tell whether a module has hooks (spatialrec.torch_private needs updating)"
        )
    return any(dicts)


__all__ = ["TORCH_VERSION", "has_module_hooks"]
