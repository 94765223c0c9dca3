"""The scan as a registered operator (spatialrec.ops.library): schema, fake implementation,
autograd, contiguous outputs, and the layers taking it while traced."""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer
from spatialrec.ops import scan_sequence, scan_sequence_op

S = 4


def _params(spatial_dims: int, n: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    k = 3 ** (spatial_dims - 1)
    out = []
    for _ in range(n):
        for shape in ((3 * S, k * S), (3 * S, S), (3 * S,), (3 * S,)):
            out.append((torch.rand(shape, dtype=dtype) - 0.5).requires_grad_())
    return out


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("spatial_dims,directions", [(2, [0, 3]), (3, [4, 1])])
def test_opcheck_scan_sequence(backend: str, spatial_dims: int, directions: list[int], carry: str) -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of the op."""
    torch.manual_seed(0)
    x = torch.randn((2, S, 4, 5) if spatial_dims == 2 else (1, S, 3, 4, 5), dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(scan_sequence_op, (x, _params(spatial_dims, len(directions)), directions, backend, carry))


def test_gradcheck_through_op() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, S, 4, 5, dtype=torch.float64, requires_grad=True)
    flat = _params(2, 2)

    def f(x: torch.Tensor, *flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.spatialrec.scan_sequence(x, list(flat), [0, 2], "fused", "line")

    assert torch.autograd.gradcheck(f, (x, *flat))


def test_op_matches_backend_and_returns_contiguous() -> None:
    """The op's outputs are contiguous whatever the input's layout (what the fakes declare): an
    output that followed a channels-last input miscompiled under inductor with dynamic shapes."""
    torch.manual_seed(0)
    x = torch.randn(2, S, 6, 7).contiguous(memory_format=torch.channels_last)
    flat = [p.detach().float() for p in _params(2, 2)]
    params = [tuple(flat[i : i + 4]) for i in (0, 4)]
    y_op = scan_sequence(x, params, ("right", "down"), "fused", use_op=True)
    y_ref = scan_sequence(x, params, ("right", "down"), "reference", use_op=False)
    torch.testing.assert_close(y_op, y_ref, rtol=1e-5, atol=1e-5)
    assert y_op.is_contiguous()
    grads = torch.ops.spatialrec.scan_sequence_backward(torch.randn_like(x), x, flat, [0, 2], "fused", "prior")
    assert all(g.is_contiguous() for g in grads)


@pytest.mark.parametrize("composition, nodes", [("serial", 1), ("parallel", 2)])
def test_layer_uses_op_when_traced(composition: str, nodes: int) -> None:
    # Serial sweeps are one op node; side-by-side sweeps one node per direction.
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "down"), composition=composition).eval()
    gm = torch.export.export(layer, (torch.randn(2, 3, 6, 7),)).graph_module
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(scan_sequence_op) == nodes
