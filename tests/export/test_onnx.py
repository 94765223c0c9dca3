"""ONNX export (spatialrec.export.onnx): the translation of the scan op into ONNX Scan nodes, run
by onnxruntime at other sizes than the export's; the batch rule; float32 only.

Every registry model, at every size and batch, is in tests/export/test_programs.py.
"""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer, create_model

onnx = pytest.importorskip("onnx", reason="the ONNX tests need the deploy extra")
ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need the deploy extra")
pytest.importorskip("onnxscript", reason="the ONNX tests need the deploy extra")

from spatialrec.export import count_onnx_nodes, to_onnx  # noqa: E402

S = 4
TINY = dict(base_width=4, depth=2, state_size=4)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **TINY)


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


def test_static_onnx_refuses_another_shape(tmp_path) -> None:
    layer = SpatialDependencyLayer(3, 4, state_size=S).eval()
    path = str(tmp_path / "static.onnx")
    to_onnx(layer, torch.randn(1, 3, 8, 8), path, dynamic=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {"input": torch.randn(1, 3, 8, 8).numpy()})
    with pytest.raises(Exception, match="(?i)dimension"):
        session.run(None, {"input": torch.randn(1, 3, 10, 8).numpy()})


def test_to_onnx_refuses_training_mode(tmp_path) -> None:
    with pytest.raises(ValueError, match="eval"):
        to_onnx(SpatialDependencyLayer(3, 4, state_size=S), torch.randn(1, 3, 8, 8), str(tmp_path / "x.onnx"))


def test_onnx_batch_one_example_serves_every_batch(tmp_path) -> None:
    """A batch-1 example gives a file with a symbolic batch that serves batches 1 and 3."""
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(3, 4, state_size=S, directions=("right", "down")).eval()
    path = str(tmp_path / "b1.onnx")
    _onnx_check(layer, (1, 3, 8, 8), [(1, 3, 8, 8), (3, 3, 9, 7)], path)
    batch_axis = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.HasField("dim_value")


def test_onnx_dynamic_batch_false_fixes_the_batch(tmp_path) -> None:
    layer = SpatialDependencyLayer(3, 4, state_size=S).eval()
    path = str(tmp_path / "fixed_batch.onnx")
    to_onnx(layer, torch.randn(1, 3, 8, 8), path, dynamic_batch=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {"input": torch.randn(1, 3, 9, 7).numpy()})  # spatial sizes stay dynamic
    with pytest.raises(Exception, match="(?i)dimension"):
        session.run(None, {"input": torch.randn(2, 3, 8, 8).numpy()})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_to_onnx_refuses_a_non_float32_example(dtype: torch.dtype, tmp_path) -> None:
    layer = SpatialDependencyLayer(3, 4, state_size=S).eval()
    with pytest.raises(TypeError, match=rf"example has dtype {dtype}.*float32.*example\.float\(\)"):
        to_onnx(layer, torch.randn(1, 3, 8, 8, dtype=dtype), str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_to_onnx_refuses_a_non_float32_model(dtype: torch.dtype, tmp_path) -> None:
    """A float32 example does not make a float64 or float16 model exportable: the Scan body is
    float32 whatever the parameters are."""
    model = _model("sdn_unet").to(dtype).eval()
    with pytest.raises(TypeError, match=rf"model parameter '.+' has dtype {dtype}.*model\.float\(\)"):
        to_onnx(model, torch.randn(1, 3, 16, 16), str(tmp_path / "x.onnx"))


def test_to_onnx_refuses_a_non_tensor_or_wrong_rank_example(tmp_path) -> None:
    layer = SpatialDependencyLayer(3, 4, state_size=S).eval()
    with pytest.raises(TypeError, match="example must be a torch.Tensor"):
        to_onnx(layer, [[1.0]], str(tmp_path / "x.onnx"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"example must have shape .* got shape \(3, 8, 8\)"):
        to_onnx(layer, torch.randn(3, 8, 8), str(tmp_path / "x.onnx"))
