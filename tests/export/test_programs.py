"""Exported programs keep their promise: every registry model, exported once from one example by
``torch.export`` (``Dim.AUTO`` on batch and space) and by :func:`spatialrec.export.to_onnx`, run at
other shapes, equals eager within 1e-4 at every shape inside the range the program declares, and
refuses (raises) outside it; it never returns something else.

The full matrix (every model x both paths x example batch 1 and 2) is ``-m slow`` and run by
``.ci/run``; the default run keeps the two cases that once failed (``sdn_transunet``: the
position embedding's size branch under ``torch.export``, a batch-1 example under ``to_onnx``).
Models are built small (width 4, depth 2, state 4) so a case takes seconds.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest
import torch
from torch.export import Dim

from spatialrec import SpatialDependencyLayer, create_model
from spatialrec.models import list_models, model_spatial_dims

SMALL: dict[str, Any] = dict(base_width=4, depth=2, state_size=4)
TRANSFORMER: dict[str, Any] = dict(transformer_dim=16, transformer_layers=1, transformer_heads=2)
DEPTH = SMALL["depth"]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = TRANSFORMER if "transunet" in name else {}
    return create_model(name, **SMALL, **extra).eval()


def _design_size(model: torch.nn.Module, spatial_dims: int) -> tuple[int, ...]:
    """The size a model is laid out for: TransUNet's ``img_size`` (its position-embedding grid);
    the U-Nets have none, so sizes their docs and examples train on (128 x 128; 32 x 64 x 64,
    the default patch of examples/segthor.py --3d)."""
    img_size = getattr(model, "img_size", None)
    if img_size is not None:
        return tuple(img_size)
    return (128, 128) if spatial_dims == 2 else (32, 64, 64)


def _run_shapes(model: torch.nn.Module, spatial_dims: int, batch: int) -> dict[str, tuple[int, ...]]:
    """The example's shape first, then the design size, smaller, the smallest the model accepts
    (``2**depth`` a side: a deepest map of one pixel, every sweep over a single line), odd,
    larger, and the example's size at batch 1 and 3."""
    c = model.in_channels
    if spatial_dims == 2:
        sizes = {"example": (64, 64), "design": _design_size(model, 2), "smaller": (24, 20),
                 "minimum": (2**DEPTH, 2**DEPTH), "odd": (97, 130), "larger": (96, 160)}  # fmt: skip
    else:
        sizes = {"example": (16, 16, 16), "design": _design_size(model, 3), "smaller": (8, 12, 10),
                 "minimum": (2**DEPTH, 2**DEPTH, 2**DEPTH + 1), "odd": (9, 11, 13), "larger": (24, 20, 28)}  # fmt: skip
        # Not 2**depth on every side: the 3D models' instance norm refuses a deepest map of one
        # voxel in eager (a map of one line along two axes is still swept).
    shapes = {k: (batch, c, *s) for k, s in sizes.items()}
    shapes["batch 1"] = (1, c, *sizes["example"])
    shapes["batch 3"] = (3, c, *sizes["example"])
    return shapes


def _inside(declared: list[Any], ranges: dict[Any, Any], shape: tuple[int, ...]) -> bool:
    """Whether ``shape`` lies inside a program's declared input shape: each int must match, each
    symbol must lie in its range and take one value wherever it appears."""
    values: dict[Any, int] = {}
    for d, n in zip(declared, shape):
        if isinstance(d, int):
            if d != n:
                return False
            continue
        if values.setdefault(d, n) != n:
            return False
        r = ranges.get(d)
        if r is not None and not (bool(r.lower <= n) and bool(n <= r.upper)):  # sympy bounds, upper maybe oo
            return False
    return True


def _check_program(
    model: torch.nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    declared: list[Any],
    ranges: dict[Any, Any],
    shapes: dict[str, tuple[int, ...]],
) -> dict[str, str]:
    """Run the program at each shape. Inside the declared range it must equal eager within
    1e-4. Outside it may refuse (raise) or serve, but what it returns must equal eager too: a
    program is never silently wrong. Returns what happened outside, ``{shape name: "refused" or
    "served"}``."""
    outside = {}
    for what, shape in shapes.items():
        torch.manual_seed(1)
        x = torch.randn(shape)
        inside = _inside(declared, ranges, shape)
        with torch.no_grad():
            ref = model(x)
            try:
                got = run(x)
            except Exception:
                if inside:
                    raise
                outside[what] = "refused"
                continue
        if not inside:
            outside[what] = "served"
        assert got.shape == ref.shape, f"{what} {shape}: shape {tuple(got.shape)} != eager {tuple(ref.shape)}"
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what} {shape}: {m}")
    return outside


def _torch_export(name: str, batch: int) -> None:
    model = _model(name)
    spatial_dims = model_spatial_dims(name)
    assert spatial_dims is not None
    shapes = _run_shapes(model, spatial_dims, batch)
    example = torch.randn(shapes["example"])
    dims = {d: Dim.AUTO for d in [0, *range(2, example.dim())]}
    ep = torch.export.export(model, (example,), dynamic_shapes=(dims,))
    # Parameters stay parameters (not frozen into constants).
    assert len(ep.graph_signature.parameters) == len(list(model.parameters()))
    placeholder = [n for n in ep.graph.nodes if n.op == "placeholder"][-1]
    declared = [d.node.expr if isinstance(d, torch.SymInt) else int(d) for d in placeholder.meta["val"].shape]
    # An expression other than one symbol per axis would need _inside to solve it.
    assert all(isinstance(d, int) or d.is_Symbol for d in declared), declared
    program = ep.module()
    outside = _check_program(model, program, declared, dict(ep.range_constraints), shapes)
    # The batch rule (docs/deploy.md): a batch-1 example fixes the batch to 1 (0/1
    # specialisation), a larger one keeps it symbolic. Every spatial axis stays symbolic, and
    # the example's and the design size are inside the range.
    assert declared[0] == 1 if batch == 1 else not isinstance(declared[0], int), declared
    assert all(not isinstance(d, int) for d in declared[2:]), declared
    assert all(ep.range_constraints[d].lower == 2**DEPTH + 1 for d in declared[2:]), ep.range_constraints
    assert "example" not in outside and "design" not in outside, outside


def _to_onnx(name: str, batch: int, tmp_path: Any) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need the deploy extra")
    pytest.importorskip("onnxscript", reason="the ONNX tests need the deploy extra")
    from spatialrec.export import to_onnx

    model = _model(name)
    spatial_dims = model_spatial_dims(name)
    assert spatial_dims is not None
    shapes = _run_shapes(model, spatial_dims, batch)
    path = str(tmp_path / f"{name}.onnx")
    to_onnx(model, torch.randn(shapes["example"]), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a 2-core CI machine shared with torch's threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    declared_dims = session.get_inputs()[0].shape  # ints, or names for symbolic axes
    # An ONNX file declares no range: a symbolic axis serves every size the model accepts.
    declared: list[Optional[Any]] = [d if isinstance(d, int) else ("sym", i) for i, d in enumerate(declared_dims)]
    assert all(not isinstance(declared[a], int) for a in [0, *range(2, len(declared))]), declared_dims

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])

    assert _check_program(model, run, declared, {}, shapes) == {}


CASES = [(n, b) for n in list_models() for b in (1, 2)]
FAST = {("sdn_transunet", 1)}


def _marks(case: tuple[str, int]) -> Any:
    return pytest.param(*case, marks=() if case in FAST else pytest.mark.slow, id=f"{case[0]}-batch{case[1]}")


@pytest.mark.parametrize("name,batch", [_marks(c) for c in CASES])
def test_torch_export_serves_its_declared_range(name: str, batch: int) -> None:
    _torch_export(name, batch)


@pytest.mark.parametrize("name,batch", [_marks(c) for c in CASES])
def test_to_onnx_serves_every_size_and_batch(name: str, batch: int, tmp_path: Any) -> None:
    _to_onnx(name, batch, tmp_path)


# ------------------------------------------------------------------------------ the default run's torch.export cases


def _export_check(model: torch.nn.Module, example: tuple[int, ...], other: tuple[int, ...]) -> None:
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
    _export_check(SpatialDependencyLayer(3, 4, state_size=4), (2, 3, 8, 8), (1, 3, 13, 6))


def test_export_dynamic_sdn_unet() -> None:
    torch.manual_seed(0)
    _export_check(create_model("sdn_unet", **SMALL), (2, 3, 32, 32), (1, 3, 17, 23))


# ------------------------------------------------------------------------------ no silent wrong shape


def test_static_export_refuses_another_shape() -> None:
    model = _model("sdn_unet")
    ep = torch.export.export(model, (torch.randn(1, 3, 16, 16),))
    with pytest.raises(Exception, match="(?i)shape|size|guard|expected"):
        ep.module()(torch.randn(1, 3, 20, 16))


def test_jit_trace_of_a_model_raises() -> None:
    model = _model("sdn_unet")
    with pytest.raises(RuntimeError, match="torch.export"):
        torch.jit.trace(model, torch.randn(1, 3, 16, 16))
