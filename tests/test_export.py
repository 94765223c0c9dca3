"""Deployment paths: the registered scan op, torch.compile, torch.export and ONNX (spatialrec.export).

Compiles and exports take seconds to tens of seconds each on the CI CPU: the default run covers
one 2D model per path with the smallest sizes; every registry model runs under ``-m slow``.
"""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer, create_model
from spatialrec.export import compile_dynamic
from spatialrec.models import list_models
from spatialrec.ops import directional_gru_scan_sequence, scan_sequence, scan_sequence_op
from spatialrec.ops.library import scan_sequence_forward_op

S = 4
TINY = dict(base_width=4, depth=2, state_size=4)


def _params(spatial_dims: int, n: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    k = 3 ** (spatial_dims - 1)
    out = []
    for _ in range(n):
        for shape in ((3 * S, k * S), (3 * S, S), (3 * S,), (3 * S,)):
            out.append((torch.rand(shape, dtype=dtype) - 0.5).requires_grad_())
    return out


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **TINY)


def _shapes(model: torch.nn.Module, sizes: list[tuple[int, ...]], batch: int = 2) -> list[tuple[int, ...]]:
    return [(batch, model.in_channels, *s) for s in sizes]


def _sizes(name: str) -> list[tuple[int, ...]]:
    # Batch 2 (a batch of 1 is specialised) and not square first: see docs/deploy.md (an inductor
    # bug with duck-shaped H == W in training).
    return [(8, 12, 10), (9, 11, 13)] if name.endswith("3d") else [(16, 20), (17, 23)]


# ------------------------------------------------------------------------------ the op


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


def test_op_matches_backend_and_returns_contiguous() -> None:
    """The op's outputs are contiguous whatever the input's layout (what the fakes declare): an
    output that followed a channels-last input miscompiled under inductor with dynamic shapes."""
    torch.manual_seed(0)
    x = torch.randn(2, S, 6, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    flat = [p.detach().float().requires_grad_() for p in _params(2, 2)]
    params = [tuple(flat[i : i + 4]) for i in (0, 4)]
    y_op = scan_sequence(x, params, ("right", "down"), "fused")
    y_ref = directional_gru_scan_sequence(x, params, ("right", "down"), backend="reference")
    torch.testing.assert_close(y_op, y_ref, rtol=1e-5, atol=1e-5)
    assert y_op.is_contiguous()
    with torch.no_grad():
        assert scan_sequence(x, params, ("right", "down"), "fused").is_contiguous()
    y, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, [0, 2], "fused", True, "line")
    assert y.is_contiguous() and all(t.is_contiguous() for t in saved)
    grads = torch.ops.spatialrec.scan_sequence_backward(torch.randn_like(x), x, flat, saved, [0, 2], "fused", "line")
    assert all(g.is_contiguous() for g in grads)


@pytest.mark.parametrize("composition, nodes", [("serial", 1), ("parallel", 2)])
def test_layer_uses_op_when_traced(composition: str, nodes: int) -> None:
    # Serial sweeps are one op node; side-by-side sweeps one node per direction.
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "down"), composition=composition).eval()
    gm = torch.export.export(layer, (torch.randn(2, 3, 6, 7),)).graph_module
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(scan_sequence_op) == nodes


# ------------------------------------------------------------------------------ torch.compile


def _grads(model: torch.nn.Module, fn, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    fn(x).square().mean().backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _compile_check(model: torch.nn.Module, shapes: list[tuple[int, ...]], backend: str = "inductor") -> None:
    """fullgraph + dynamic: a training step per shape (gradients match eager) and an eval forward
    per shape (matches eager), neither recompiling for a new size.

    With inductor the model is compiled by :func:`spatialrec.export.compile_dynamic` (plain
    ``torch.compile`` recompiles a conv net's training step per size, docs/deploy.md).
    """
    torch._dynamo.reset()
    compiled = compile_dynamic(model) if backend == "inductor" else torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    model.train()
    try:
        for shape in shapes:
            x = torch.randn(shape)
            got, ref = _grads(model, compiled, x), _grads(model, model, x)
            assert len(got) == len(ref) > 0
            for g, r in zip(got, ref):
                torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4)
            torch._dynamo.config.error_on_recompile = True  # later shapes reuse this graph
        torch._dynamo.config.error_on_recompile = False
        model.eval()  # a new graph: the mode is guarded
        with torch.no_grad():
            for shape in shapes:
                x = torch.randn(shape)
                torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
                torch._dynamo.config.error_on_recompile = True
    finally:
        torch._dynamo.config.error_on_recompile = False


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_compile_fullgraph_layer(backend: str) -> None:
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "up"))
    _compile_check(layer, [(2, 3, 6, 9), (3, 3, 11, 7), (2, 3, 8, 8)], backend)


@pytest.mark.parametrize("name", list_models())
def test_every_model_captures_as_one_graph(name: str) -> None:
    """Dynamo alone (no inductor): one graph, no breaks, for a training forward of each model."""
    model = _model(name).train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(_shapes(model, _sizes(name))[0]))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_compile_fullgraph_every_model(name: str) -> None:
    torch.manual_seed(0)
    # No dropout in TransUNet: compiled and eager draw different dropout masks.
    model = create_model(name, **TINY, **({"dropout": 0.0} if "transunet" in name else {}))
    _compile_check(model, _shapes(model, _sizes(name)))


@pytest.mark.slow
def test_compile_dynamic_square_sizes() -> None:
    """A square first input (H == W shares one symbol) trains too (it failed in inductor's
    convolution backward lowering, which compile_dynamic replaces)."""
    model = _model("sdn_unet")
    _compile_check(model, _shapes(model, [(16, 16), (17, 17), (20, 20)]))


# ------------------------------------------------------------------------------ torch.export


def _export_check(model: torch.nn.Module, example: tuple[int, ...], other: tuple[int, ...]) -> None:
    from torch.export import Dim

    model.eval()
    dims = {0: Dim.AUTO, **{d: Dim.AUTO for d in range(2, len(example))}}
    ep = torch.export.export(model, (torch.randn(example),), dynamic_shapes=(dims,))
    x = torch.randn(other)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-6)
    # Parameters stay parameters (not frozen into constants).
    assert len(ep.graph_signature.parameters) == len(list(model.parameters()))


def test_export_dynamic_layer() -> None:
    torch.manual_seed(0)
    _export_check(SpatialDependencyLayer(3, 4, state_size=S), (2, 3, 8, 8), (1, 3, 13, 6))


def test_export_dynamic_sdn_unet() -> None:
    model = _model("sdn_unet")
    _export_check(model, (2, 3, 32, 32), (1, 3, 17, 23))


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_export_dynamic_every_model(name: str) -> None:
    model = _model(name)
    example, other = _shapes(model, [(8, 8, 8), (9, 11, 10)] if name.endswith("3d") else [(32, 32), (17, 23)])
    _export_check(model, example, other)


# ------------------------------------------------------------------------------ ONNX

onnx = pytest.importorskip("onnx", reason="the ONNX tests need the deploy extra")
ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need the deploy extra")
pytest.importorskip("onnxscript", reason="the ONNX tests need the deploy extra")

from spatialrec.export import count_onnx_nodes, to_onnx  # noqa: E402


def _onnx_check(model: torch.nn.Module, example: tuple[int, ...], others: list[tuple[int, ...]], path: str) -> int:
    model.eval()
    to_onnx(model, torch.randn(example), path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in others:
        x = torch.randn(shape)
        (y,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert tuple(y.shape) == tuple(ref.shape)
        torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-4)
    return count_onnx_nodes(path)


@pytest.mark.parametrize("cell", [{"carry": "line", "composition": "parallel"}, {"carry": "prior", "composition": "serial"}])
def test_onnx_layer_every_direction_any_size(tmp_path, cell) -> None:
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "left", "down", "up"), **cell)
    nodes = _onnx_check(layer, (2, 3, 8, 8), [(1, 3, 13, 6), (2, 3, 17, 23)], str(tmp_path / "a.onnx"))
    # The graph does not grow with the export size.
    big = _onnx_check(layer, (2, 3, 24, 24), [(1, 3, 5, 7)], str(tmp_path / "b.onnx"))
    assert nodes == big
    assert sum(n.op_type == "Scan" for n in onnx.load(str(tmp_path / "a.onnx")).graph.node) == 4


@pytest.mark.parametrize("carry, composition", [("line", "parallel"), ("prior", "serial"), ("line", "serial")])
def test_onnx_layer_3d(tmp_path, carry, composition) -> None:
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(2, 3, state_size=S, spatial_dims=3, directions=("in", "left", "up"), carry=carry, composition=composition)
    _onnx_check(layer, (2, 2, 4, 5, 6), [(1, 2, 5, 3, 7)], str(tmp_path / "a.onnx"))


def test_onnx_sdn_unet_two_sizes(tmp_path) -> None:
    _onnx_check(_model("sdn_unet"), (2, 3, 32, 32), [(1, 3, 17, 23), (2, 3, 40, 48)], str(tmp_path / "m.onnx"))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n.startswith("sdn_")])
def test_onnx_every_sdn_model(name: str, tmp_path) -> None:
    model = _model(name)
    example, *others = _shapes(model, [(8, 8, 8), (9, 11, 10)] if name.endswith("3d") else [(32, 32), (17, 23), (40, 48)])
    _onnx_check(model, example, others, str(tmp_path / "m.onnx"))


# ------------------------------------------------------------------------------ no silent wrong shape


def test_static_onnx_refuses_another_shape(tmp_path) -> None:
    layer = SpatialDependencyLayer(3, 4, state_size=S).eval()
    path = str(tmp_path / "static.onnx")
    to_onnx(layer, torch.randn(1, 3, 8, 8), path, dynamic=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {"input": torch.randn(1, 3, 8, 8).numpy()})
    with pytest.raises(Exception, match="(?i)dimension"):
        session.run(None, {"input": torch.randn(1, 3, 10, 8).numpy()})


def test_static_export_refuses_another_shape() -> None:
    model = _model("sdn_unet").eval()
    ep = torch.export.export(model, (torch.randn(1, 3, 16, 16),))
    with pytest.raises(Exception, match="(?i)shape|size|guard|expected"):
        ep.module()(torch.randn(1, 3, 20, 16))


def test_jit_trace_of_a_model_raises() -> None:
    model = _model("sdn_unet").eval()
    with pytest.raises(RuntimeError, match="torch.export"):
        torch.jit.trace(model, torch.randn(1, 3, 16, 16))


def test_to_onnx_refuses_training_mode(tmp_path) -> None:
    with pytest.raises(ValueError, match="eval"):
        to_onnx(SpatialDependencyLayer(3, 4, state_size=S), torch.randn(1, 3, 8, 8), str(tmp_path / "x.onnx"))
