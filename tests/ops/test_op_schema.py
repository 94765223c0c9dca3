"""The registered scan ops' schemas, fakes and autograd registrations (opcheck, both carries), the
inference op's refusal of a backward, and the layer's op nodes when traced. Moved from the former
tests/test_export.py; the deployment paths themselves are tested in tests/export/."""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer
from spatialrec.ops import directional_gru_scan_sequence, scan_sequence, scan_sequence_op
from spatialrec.ops import library
from spatialrec.ops.library import scan_sequence_forward_op

S = 4


def _params(spatial_dims: int, n: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    k = 3 ** (spatial_dims - 1)
    out = []
    for _ in range(n):
        for shape in ((3 * S, k * S), (3 * S, S), (3 * S,), (3 * S,)):
            out.append((torch.rand(shape, dtype=dtype) - 0.5).requires_grad_())
    return out



def _op_inputs(spatial_dims: int, directions: list[int], requires_grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    x = torch.randn((2, S, 4, 5) if spatial_dims == 2 else (1, S, 3, 4, 5), dtype=torch.float64, requires_grad=requires_grad)
    return x, [p.requires_grad_(requires_grad) for p in _params(spatial_dims, len(directions))]


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("spatial_dims,directions", [(2, [0, 3]), (3, [4, 1])])
def test_opcheck_scan_sequence_ops(backend: str, spatial_dims: int, directions: list[int], carry: str) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of the three
    ops, both cells: the inference op, the forward that keeps what the backward needs (with and
    without the gates) and the backward op on what that forward saved."""
    x, flat = _op_inputs(spatial_dims, directions, requires_grad=False)
    torch.library.opcheck(scan_sequence_op, (x, flat, directions, backend, carry))
    x, flat = _op_inputs(spatial_dims, directions, requires_grad=True)
    for keep_gates in (True, False):
        torch.library.opcheck(scan_sequence_forward_op, (x, flat, directions, backend, keep_gates, carry))
    y, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, directions, backend, True, carry)
    args = (torch.randn_like(y), x.detach(), [p.detach() for p in flat], [t.detach() for t in saved], directions, backend, carry)
    # The reference backward differentiates the reference with torch.func.vjp, whose wrapper
    # tensors the dispatch modes of opcheck's other checks cannot inspect
    # ("Cannot access storage of TensorWrapper"): for it, the fake is compared by hand below.
    utils = ("test_autograd_registration",)
    torch.library.opcheck(torch.ops.spatialrec.scan_sequence_backward.default, args, **({"test_utils": utils} if backend == "reference" else {}))
    real = torch.ops.spatialrec.scan_sequence_backward(*args)
    grad, x0, flat0, saved0 = args[:4]
    with torch._subclasses.FakeTensorMode() as mode:
        fake = torch.ops.spatialrec.scan_sequence_backward(
            mode.from_tensor(grad), mode.from_tensor(x0), [mode.from_tensor(t) for t in flat0], [mode.from_tensor(t) for t in saved0], directions, backend, carry
        )
    assert [(t.shape, t.dtype, t.stride()) for t in real] == [(t.shape, t.dtype, t.stride()) for t in fake]


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("keep_gates", [True, False])
def test_gradcheck_through_op(keep_gates: bool, carry: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, S, 4, 5, dtype=torch.float64, requires_grad=True)
    flat = _params(2, 2)

    def f(x: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.spatialrec.scan_sequence_forward(x, list(flat), [0, 2], "fused", keep_gates, carry)[0]

    assert torch.autograd.gradcheck(f, (x, *flat))


def test_inference_op_refuses_a_backward() -> None:
    x, flat = _op_inputs(2, [0], requires_grad=True)
    y = torch.ops.spatialrec.scan_sequence(x, flat, [0], "fused", "line")
    with pytest.raises(RuntimeError, match="keeps nothing for a backward"):
        y.sum().backward()


@pytest.mark.parametrize("input_format", [torch.contiguous_format, torch.channels_last])
def test_op_matches_backend_and_returns_its_declared_format(input_format: torch.memory_format) -> None:
    """The op's outputs have the format the fakes declare, fixed by the input's rank
    (channels-last in 2D), whatever the input's strides: an output that followed its input's
    layout miscompiled under inductor with dynamic shapes. Parameter gradients are contiguous."""
    torch.manual_seed(0)
    x = torch.randn(2, S, 6, 7).contiguous(memory_format=input_format).requires_grad_()
    flat = [p.detach().float().requires_grad_() for p in _params(2, 2)]
    params = [tuple(flat[i : i + 4]) for i in (0, 4)]
    cl = torch.channels_last
    assert library.output_format(x) == cl
    y_op = scan_sequence(x, params, ("right", "down"), "fused")
    y_ref = directional_gru_scan_sequence(x, params, ("right", "down"), backend="reference")
    torch.testing.assert_close(y_op, y_ref, rtol=1e-5, atol=1e-5)
    assert y_op.is_contiguous(memory_format=cl)
    with torch.no_grad():
        assert scan_sequence(x, params, ("right", "down"), "fused").is_contiguous(memory_format=cl)
        for backend in ("reference", "fused"):
            assert torch.ops.spatialrec.scan_sequence(x, flat, [0, 2], backend, "line").is_contiguous(memory_format=cl)
    y, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, [0, 2], "fused", True, "line")
    assert y.is_contiguous(memory_format=cl) and all(t.is_contiguous() for t in saved)
    dx, *dp = torch.ops.spatialrec.scan_sequence_backward(torch.randn_like(x), x, flat, saved, [0, 2], "fused", "line")
    assert dx.is_contiguous(memory_format=cl) and all(g.is_contiguous() for g in dp)
    # The fakes (which also serve meta tensors) declare the strides the kernels return.
    mx, mflat = x.detach().to("meta"), [t.detach().to("meta") for t in flat]
    fy, fsaved = torch.ops.spatialrec.scan_sequence_forward(mx, mflat, [0, 2], "fused", True, "line")
    fgrads = torch.ops.spatialrec.scan_sequence_backward(fy, mx, mflat, fsaved, [0, 2], "fused", "line")
    assert fy.stride() == y.stride() and fgrads[0].stride() == dx.stride()
    assert [t.stride() for t in fsaved] == [t.stride() for t in saved]


def test_op_output_format_3d_is_contiguous() -> None:
    x = torch.randn(1, S, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d)
    flat = [p.detach().float() for p in _params(3, 1)]
    assert library.output_format(x) == torch.contiguous_format
    assert torch.ops.spatialrec.scan_sequence(x, flat, [4], "fused", "line").is_contiguous()


@pytest.mark.parametrize("composition, nodes", [("serial", 1), ("parallel", 2)])
def test_layer_uses_op_when_traced(composition: str, nodes: int) -> None:
    # Serial sweeps are one op node; side-by-side sweeps one node per direction.
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "down"), composition=composition).eval()
    gm = torch.export.export(layer, (torch.randn(2, 3, 6, 7),)).graph_module
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(scan_sequence_op) == nodes


