"""spatialrec.ops.projection: the layout and kernel choices around the sweeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialrec import options
from spatialrec.ops import WorkingLayout, project_in_activation, project_out, working_layout
from spatialrec.ops.projection import conv3d_by_planes


def test_working_layout_per_backend_device_and_rank():
    x = torch.randn(1, 3, 4, 5)
    assert working_layout(x, "fused") == WorkingLayout(channels_last=True, restore_contiguous=True, fast_kernels=True)
    # A caller already channels-last keeps its own format: nothing to restore.
    cl = x.contiguous(memory_format=torch.channels_last)
    assert working_layout(cl, "fused") == WorkingLayout(channels_last=True, restore_contiguous=False, fast_kernels=True)
    # The 2D ops return channels-last states for every backend: a contiguous caller is restored.
    assert working_layout(x, "reference") == WorkingLayout(restore_contiguous=True, fast_kernels=True)
    assert working_layout(torch.randn(1, 3, 2, 4, 5), "fused") == WorkingLayout(fast_kernels=True)  # 3D: no line layout
    assert working_layout(x, None) == WorkingLayout(restore_contiguous=True)  # sweeps on different backends: plain ops
    with options.override(backend="reference"):  # "auto" is resolved for x
        assert working_layout(x, "auto") == WorkingLayout(restore_contiguous=True, fast_kernels=True)
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


@pytest.mark.parametrize(
    "kernel_size, padding, stride, dilation, bias",
    [
        (3, 1, 1, 1, True),
        (1, 0, 1, 1, True),
        ((3, 5, 3), (0, 2, 1), 1, 1, False),  # depth shrinks, unequal kernel
        ((5, 3, 3), (3, 1, 1), (1, 2, 2), (1, 2, 1), True),  # depth grows, strided planes
        ((2, 2, 2), (1, 0, 0), 1, 1, True),  # even kernel
    ],
)
def test_conv3d_by_planes_is_the_convolution(kernel_size, padding, stride, dilation, bias):
    """Values and gradients of the plane-wise form against torch's Conv3d (float64, gradcheck)."""
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    x = torch.randn(1, 2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    got, want = conv3d_by_planes(x, conv), conv(x)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    leaves = [x, *conv.parameters()]
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda v: conv3d_by_planes(v, conv), (x,))


def test_conv3d_by_planes_declines_what_it_cannot_do():
    x = torch.randn(1, 2, 4, 5, 6)
    assert conv3d_by_planes(x, nn.Conv3d(2, 3, 3, stride=(2, 1, 1))) is None
    assert conv3d_by_planes(x, nn.Conv3d(2, 3, 3, dilation=(2, 1, 1))) is None
    assert conv3d_by_planes(x, nn.Conv3d(2, 4, 3, groups=2)) is None
    assert conv3d_by_planes(x, nn.Conv3d(2, 3, 3, padding="same")) is None
    assert conv3d_by_planes(x, nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect")) is None


@pytest.mark.parametrize(
    "shape, used",
    [
        ((1, 8, 4, 5, 6), True),  # one small volume: torch's reference Conv3d path
        ((2, 8, 4, 5, 6), False),  # a batch: oneDNN
        ((1, 2, 4, 5, 6), False),  # few input channels: nothing to gain
        ((1, 8, 48, 64, 6), False),  # C D H above torch's threshold: oneDNN
    ],
)
def test_project_in_takes_the_plane_form_where_torch_takes_its_reference_path(monkeypatch, shape, used):
    from spatialrec.ops import projection

    calls = []
    real = projection.conv3d_by_planes
    monkeypatch.setattr(projection, "conv3d_by_planes", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    conv = nn.Conv3d(shape[1], 3, 3, padding=1)
    x = torch.randn(shape)
    h = project_in_activation(x, conv, working_layout(x, "fused"))
    assert bool(calls) == used
    torch.testing.assert_close(h, torch.tanh(conv(x)), rtol=0, atol=1e-6)


def test_compiled_layer_restates_tanh_and_projection_as_traceable_ops():
    """Under torch.compile on the CPU the tanh is ``2 sigmoid(2 v) - 1`` and the channels-last
    1x1 projection a matmul (inductor's tanh and torch's channels-last 1x1 convolution are slow
    there): same values and gradients as eager, and the traced graph holds those ops."""
    from spatialrec import SpatialDependencyLayer

    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=5)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    y, ref = compiled(x), layer(x)
    assert y.is_contiguous()
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    wrt = [x, layer.project_in.weight, layer.project_out.weight, layer.project_out.bias]
    for a, b in zip(torch.autograd.grad(y, wrt, g), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, b)
    targets = {getattr(n.target, "__name__", str(n.target)) for gm in graphs for n in gm.graph.nodes if n.op in ("call_function", "call_method")}
    assert {"sigmoid", "matmul"} <= targets and "tanh" not in targets and "tanh_" not in targets, targets
