"""spatialrec.torch_private: the wrapped uses of private torch API still see what they rely on."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from spatialrec import torch_private


def test_torch_version_is_the_installed_one():
    assert torch_private.TORCH_VERSION == tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])


@pytest.mark.parametrize(
    "register",
    [
        lambda m: m.register_forward_hook(lambda mod, i, o: o),
        lambda m: m.register_forward_pre_hook(lambda mod, i: None),
        lambda m: m.register_full_backward_hook(lambda mod, gi, go: None),
        lambda m: m.register_full_backward_pre_hook(lambda mod, go: None),
    ],
    ids=["forward", "forward-pre", "backward", "backward-pre"],
)
def test_has_module_hooks_sees_every_kind_and_its_removal(register):
    conv = nn.Conv2d(1, 1, 1)
    assert not torch_private.has_module_hooks(conv)
    handle = register(conv)
    assert torch_private.has_module_hooks(conv)
    handle.remove()
    assert not torch_private.has_module_hooks(conv)


def test_has_module_hooks_refuses_to_guess_on_another_layout(monkeypatch):
    conv = nn.Conv2d(1, 1, 1)
    monkeypatch.delattr(conv, "_forward_hooks")  # as a torch that keeps them elsewhere would
    with pytest.raises(RuntimeError, match="needs updating"):
        torch_private.has_module_hooks(conv)
