"""The one place where spatialrec reads private torch API, for what torch offers no public way to do.

Each use is one function here, with a comment saying why no public API serves and a check of the
layout it relies on, so that a torch release that changes it fails here, with a message, instead
of silently giving a wrong answer somewhere else. Bottom level: imports only torch.
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


def storage_use_count(t: torch.Tensor) -> int:
    """How many tensors (and other owners) share ``t``'s storage, ``t`` included (the Python
    storage object this call makes to ask is not counted).

    Why private: the CPU workspace (:mod:`spatialrec.ops.workspace`) reuses a buffer only when
    nothing but its own tensor references the memory: a buffer autograd saved for a backward
    must not be handed out again. torch (2.1-2.13) has no public way to ask whether a storage is
    shared; ``torch._C._storage_Use_Count`` returns the storage's reference count.

    Raises:
        RuntimeError: this torch has no such function (the workspace cannot be used).

    Example:
        >>> a = torch.zeros(4)
        >>> storage_use_count(a)
        1
        >>> b = a[1:]; storage_use_count(a)
        2
    """
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        raise RuntimeError(
            f"torch {torch.__version__} has no torch._C._storage_Use_Count; spatialrec cannot tell "
            "whether a buffer is shared (spatialrec.torch_private needs updating; "
            "spatialrec.ops.workspace.set_limit(0) turns the workspace off)"
        )
    storage = t.untyped_storage()  # a Python storage object: one more reference while it lives
    return int(count(storage._cdata)) - 1


__all__ = ["TORCH_VERSION", "has_module_hooks", "storage_use_count"]
