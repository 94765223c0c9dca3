"""spatialrec.ops.projection: the layout and kernel choices around the sweeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialrec import options
from spatialrec.ops import WorkingLayout, project_in_activation, project_out, working_layout


def test_working_layout_per_backend_device_and_rank():
    x = torch.randn(1, 3, 4, 5)
    assert working_layout(x, "fused") == WorkingLayout(channels_last=True, restore_contiguous=True, fast_kernels=True)
    # A caller already channels-last keeps its own format: nothing to restore.
    cl = x.contiguous(memory_format=torch.channels_last)
    assert working_layout(cl, "fused") == WorkingLayout(channels_last=True, restore_contiguous=False, fast_kernels=True)
    assert working_layout(x, "reference") == WorkingLayout(fast_kernels=True)
    assert working_layout(torch.randn(1, 3, 2, 4, 5), "fused") == WorkingLayout(fast_kernels=True)  # 3D: no line layout
    assert working_layout(x, None) == WorkingLayout()  # sweeps on different backends: plain ops
    with options.override(backend="reference"):  # "auto" is resolved for x
        assert working_layout(x, "auto") == WorkingLayout(fast_kernels=True)
    assert working_layout(x, "auto").channels_last  # "auto" is fused on the CPU


@pytest.mark.filterwarnings("ignore:.*jit.trace.*:DeprecationWarning")
def test_traced_programs_get_the_plain_ops():
    seen = []

    def f(x):
        seen.append(working_layout(x, "fused"))
        return x + 1

    torch.jit.trace(f, torch.randn(1, 2, 3, 3), check_trace=False)
    assert seen == [WorkingLayout(channels_last=True, restore_contiguous=True, fast_kernels=False)]


@pytest.mark.parametrize("layout", [WorkingLayout(True, True, True), WorkingLayout(fast_kernels=True), WorkingLayout()])
def test_project_in_activation_is_tanh_of_the_convolution(layout):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(2, 3, 5, 7)
    h = project_in_activation(x, conv, layout)
    assert h.is_contiguous(memory_format=torch.channels_last if layout.channels_last else torch.contiguous_format)
    # The fast tanh (2 sigmoid(2v) - 1) is within about one float32 ulp of 1 of torch's.
    torch.testing.assert_close(h, torch.tanh(conv(x)), rtol=0, atol=0 if not layout.fast_kernels else 4e-7)


@pytest.mark.parametrize("autocast", [False, True])
def test_project_out_hands_back_the_callers_format(autocast):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 4, 1)
    h = torch.randn(2, 6, 5, 7).contiguous(memory_format=torch.channels_last)
    want = conv(h)
    layout = working_layout(torch.randn(2, 3, 5, 7), "fused")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = project_out(h, conv, layout)
    assert y.is_contiguous()
    torch.testing.assert_close(y.float(), want, **({"rtol": 2e-2, "atol": 2e-2} if autocast else {}))
    # Without restore_contiguous the convolution's own output format is kept.
    y2 = project_out(h, conv, WorkingLayout(fast_kernels=True))
    assert y2.stride() == want.stride()
