"""ONNX export of SDN models whose graph does not grow with the image size.

The layers call the registered operator ``torch.ops.spatialrec.scan_sequence``
(:mod:`spatialrec.ops.library`), so ``torch.export`` and the dynamo ONNX exporter see one node per
SDN layer. :func:`onnx_scan_sequence` translates that node into ONNX: per sweep, a ``Transpose``
(and a reversing ``Slice`` for the decreasing senses) to the canonical `down` view, the prior term
``W_hh p + b_hh`` of every line at once (one ``Einsum``), then one ONNX ``Scan`` over the lines
whose body applies the GRU line update (``docs/maths.md``) to a whole line: the neighbour term
``W_ih a + b_ih`` is a ``Conv`` (kernel 3 in 2D, 3x3 in 3D, zero padding 1) of the previous line,
because the neighbour vector ``a`` of position ``j`` is ``[prev[j-1], prev[j], prev[j+1]]`` (in 3D
the 9 offsets in row-major order), which is exactly a convolution with the kernel
``K[o, s, k] = W_ih[o, k * S + s]``. The node count therefore depends on the number of SDN
layers and sweeps, not on the image size, and the exported model runs at any size.

:func:`to_onnx` wraps ``torch.onnx.export(..., dynamo=True)`` with that translation and dynamic
spatial sizes. Needs the ``deploy`` extra (``pip install 'spatialrec[deploy]'``: onnx, onnxscript;
onnxruntime to run the result).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from ..ops.directions import DIRECTIONS, sweep_dim
from ..ops.library import scan_sequence_op

__all__ = ["count_onnx_nodes", "onnx_scan_sequence", "onnx_translation_table", "to_onnx"]

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


def _onnx_modules() -> tuple[Any, Any, Any]:
    try:
        import onnx_ir as ir
        import onnxscript
        from onnxscript import opset18 as op
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs onnxscript and onnx: {err} (pip install 'spatialrec[deploy]')"
        ) from err
    return ir, onnxscript, op


def _body_graph(ir: Any, spatial_dims: int, k_ih: Any, b_ih: Any, carry: str = "prior") -> Any:
    """The ``Scan`` body: state ``prev`` and scan inputs ``x_i`` (the prior line), ``gh_i``
    (its ``W_hh p + b_hh``) and ``keep_i`` (a scalar, 0 for the first line, 1 for the others)
    -> ``(h, h)``, the new line as next state and as scan output. ``carry``: what ``(1 - z)``
    keeps, ``x_i`` (``"prior"``) or ``prev`` (``"line"``).

    ``k_ih``/``b_ih`` are values of the enclosing graph (ONNX outer-scope references).
    """
    f32 = ir.DataType.FLOAT
    rest = [None] * spatial_dims  # (B, S, *rest) with rest of length spatial_dims - 1
    prev = ir.val("prev", f32, rest + [None])
    x_i = ir.val("x_i", f32, rest + [None])
    gh_i = ir.val("gh_i", f32, rest + [None])
    keep_i = ir.val("keep_i", f32, [])
    nodes = []

    def add(op_type: str, inputs: list, attributes: Optional[dict] = None, num_outputs: int = 1) -> Any:
        n = ir.node(op_type, inputs, attributes or {}, num_outputs=num_outputs)
        nodes.append(n)
        return n.outputs if num_outputs > 1 else n.outputs[0]

    gi = add("Conv", [prev, k_ih, b_ih], {"pads": [1] * (2 * (spatial_dims - 1))})
    r_i, z_i, n_i = add("Split", [gi], {"axis": 1, "num_outputs": 3}, num_outputs=3)
    r_h, z_h, n_h = add("Split", [gh_i], {"axis": 1, "num_outputs": 3}, num_outputs=3)
    r = add("Sigmoid", [add("Add", [r_i, r_h])])
    z = add("Sigmoid", [add("Add", [z_i, z_h])])
    n = add("Tanh", [add("Add", [n_i, add("Mul", [r, n_h])])])
    if carry == "line":
        # z * n + (1 - z) * prev for the other lines; the first line keeps its prior:
        # h = x_i + keep * (prev + z * (n - prev) - x_i).
        upd = add("Add", [prev, add("Mul", [z, add("Sub", [n, prev])])])
        h = add("Add", [x_i, add("Mul", [keep_i, add("Sub", [upd, x_i])])])
    else:
        # z * n + (1 - z) * p = p + z * (n - p); the first line keeps its prior (update times 0).
        h = add("Add", [x_i, add("Mul", [keep_i, add("Mul", [z, add("Sub", [n, x_i])])])])
    h.name = "h_next"
    y = add("Identity", [h])
    y.name = "h_out"
    return ir.Graph(inputs=[prev, x_i, gh_i, keep_i], outputs=[h, y], nodes=nodes, name="sdn_line_update")


def _perm(direction: str, ndim: int) -> list[int]:
    """Transpose ``(B, S, *spatial)`` -> ``(L, B, S, *rest)`` for ``direction`` (rest in axis order)."""
    dim, _ = sweep_dim(direction, ndim)
    return [dim, 0, 1] + [d for d in range(2, ndim) if d != dim]


def _sweep(op: Any, ir: Any, x: Any, params: Sequence[Any], direction: str, ndim: int, carry: str = "prior") -> Any:
    w_ih, w_hh, b_ih, b_hh = params
    spatial_dims = ndim - 2
    k = 3 ** (spatial_dims - 1)
    perm = _perm(direction, ndim)
    inverse = [perm.index(i) for i in range(ndim)]
    reverse = sweep_dim(direction, ndim)[1]
    i64 = lambda v: op.Constant(value_ints=list(v))  # noqa: E731

    def flip0(t: Any) -> Any:
        return op.Slice(t, i64([-1]), i64([_INT64_MIN]), i64([0]), i64([-1]))

    v = op.Transpose(x, perm=perm)
    if reverse:
        v = flip0(v)
    # Conv kernel of the neighbour term: K[o, s, offset] = W_ih[o, offset * S + s].
    k_ih = op.Transpose(op.Reshape(w_ih, i64([0, k, -1])), perm=[0, 2, 1])
    if spatial_dims == 3:
        k_ih = op.Reshape(k_ih, i64([0, 0, 3, 3]))
    letters = "xyz"[: spatial_dims - 1]
    gh = op.Einsum(v, w_hh, equation=f"lbs{letters},os->lbo{letters}")
    gh = op.Add(gh, op.Reshape(b_hh, i64([1, 1, -1] + [1] * (spatial_dims - 1))))
    # The Scan runs over every line, the first included: onnxruntime cannot run a Scan over
    # zero lines, which scanning lines 1..L-1 from the first would be on a map one line long
    # (the deepest map of a model at its smallest input). The first line keeps its prior
    # exactly: its update is multiplied by keep = 0 (1 for the other lines, an exact no-op),
    # from a zero initial state.
    length = op.Shape(v, start=0, end=1)
    index = op.Range(op.Constant(value_int=0), op.Squeeze(length, i64([0])), op.Constant(value_int=1))
    keep = op.Cast(op.Greater(index, op.Constant(value_int=0)), to=ir.DataType.FLOAT)
    zeros = op.ConstantOfShape(op.Shape(v, start=1))  # float32 zeros of one line's shape
    body = _body_graph(ir, spatial_dims, k_ih, b_ih, carry)
    final = op.Scan(zeros, v, gh, keep, body=body, num_scan_inputs=3)
    # The exporter gives a variadic-output op one output (the final state); the scan output
    # (every swept line, stacked) is the node's second.
    scan = final.producer()
    scan.resize_outputs(2)
    out = scan.outputs[1]
    if reverse:
        out = flip0(out)
    return op.Transpose(out, perm=inverse)


def onnx_scan_sequence(x: Any, params: Sequence[Any], directions: Sequence[int], backend: str = "auto", carry: str = "prior") -> Any:
    """ONNX translation of ``spatialrec::scan_sequence`` (for ``custom_translation_table``).

    ``x``: the ``(B, S, H, W)`` or ``(B, S, D, H, W)`` value (float32); ``params``: the flattened
    ``(weight_ih, weight_hh, bias_ih, bias_hh)`` of each sweep; ``directions``: direction codes.
    ``backend`` is ignored: the ONNX graph is its own backend. One ``Scan`` per sweep, whose
    body keeps the prior line or the previous line as ``carry`` says.
    """
    ir, _, op = _onnx_modules()
    ndim = len(x.shape) if x.shape is not None else 4
    for i, code in enumerate(directions):
        x = _sweep(op, ir, x, params[4 * i : 4 * i + 4], DIRECTIONS[code], ndim, carry)
    return x


def onnx_translation_table() -> dict[Any, Any]:
    """``{torch.ops.spatialrec.scan_sequence.default: onnx_scan_sequence}``, for
    ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)``."""
    return {scan_sequence_op: onnx_scan_sequence}


def _dynamic_shapes(example: torch.Tensor, batch: bool) -> tuple[dict[int, Any], ...]:
    from torch.export import Dim

    dims: dict[int, Any] = {}
    if batch:
        dims[0] = Dim.AUTO
    for d in range(2, example.dim()):
        dims[d] = Dim.AUTO
    return (dims,)


def _check_float32(model: torch.nn.Module, example: object) -> torch.Tensor:
    """The example and every floating parameter and buffer of ``model`` must be float32: the
    ``Scan`` body (:func:`_body_graph`) is built in float32, and a graph of another dtype around
    it would not load in onnxruntime or would compute in mixed precision."""
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example must be a torch.Tensor (B, C, H, W) or (B, C, D, H, W), got {type(example).__name__}")
    if example.dim() not in (4, 5):
        raise ValueError(f"example must have shape (B, C, H, W) or (B, C, D, H, W), got shape {tuple(example.shape)}")
    if example.dtype != torch.float32:
        raise TypeError(
            f"example has dtype {example.dtype}; to_onnx exports float32 only (the ONNX Scan of the SDN "
            "layers is float32): pass example.float() and a float32 model (model.float())"
        )
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and t.dtype != torch.float32:
                raise TypeError(
                    f"model {kind} {name!r} has dtype {t.dtype}; to_onnx exports float32 models only "
                    "(the ONNX Scan of the SDN layers is float32): export model.float(), e.g. a copy "
                    "(copy.deepcopy(model).float())"
                )
    return example


def to_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Union[str, "os.PathLike[str]"],
    dynamic: bool = True,
    dynamic_batch: bool = True,
    opset_version: int = 18,
) -> Any:
    """Export ``model`` (in eval mode) to an ONNX file that runs at any image size and batch.

    The file's input ``input`` and output ``output`` have symbolic batch and spatial sizes (with
    ``dynamic``); it serves every batch size and every spatial size the model itself accepts
    (each side ``>= 2**depth`` for the registry models), matching eager within 1e-4.

    The batch rule. A batch of 1 in ``example`` does not fix the file's batch: with
    ``dynamic_batch`` the model is exported from the example repeated to a batch of 2 (in eval
    mode the samples of a batch are independent, so that changes nothing but the trace). A
    batch of 1 would otherwise be specialised by the exporter (0/1 specialisation), and a
    program traced at batch 1 can hold shapes tied to it inside while its input looks dynamic
    (``sdn_transunet``'s attention failed at batch 2 in onnxruntime).

    Args:
        model: a module built from spatialrec layers (or any module; other ops go through the
            standard exporter), float32. Put it in eval mode first (batch norm statistics).
        example: an example input ``(B, C, H, W)`` or ``(B, C, D, H, W)``, float32, any batch.
        path: where to write the ``.onnx`` file.
        dynamic: export with symbolic spatial sizes (and batch, see ``dynamic_batch``). With
            ``False`` the file serves the example's shape only, and onnxruntime refuses any
            other shape (it checks the declared input dims), never silently resizing.
        dynamic_batch: also make the batch size symbolic (only with ``dynamic``); ``False``
            fixes it to the example's.
        opset_version: ONNX opset (>= 18).

    Returns:
        The ``torch.onnx.ONNXProgram`` (already saved to ``path``).

    Raises:
        ImportError: onnxscript/onnx missing (extra ``deploy``).
        TypeError: ``example`` is not a tensor, or it or a floating parameter or buffer of
            ``model`` is not float32.
        ValueError: ``example`` does not have 4 or 5 dims, the model is training, or the export
            had to fix an axis that ``dynamic`` asked to keep symbolic.

    Example:
        >>> from spatialrec import create_model
        >>> model = create_model("sdn_unet", base_width=4, depth=2, state_size=4).eval()
        >>> program = to_onnx(model, torch.randn(1, 3, 32, 32), "sdn_unet.onnx")
    """
    _onnx_modules()
    example = _check_float32(model, example)
    if model.training:
        raise ValueError("model is in training mode; call model.eval() before exporting (batch norm statistics)")
    if opset_version < 18:
        raise ValueError(f"opset_version={opset_version} is too old; the translation needs opset >= 18")
    traced = example
    if dynamic and dynamic_batch and example.shape[0] == 1:
        traced = example.repeat(2, *([1] * (example.dim() - 1)))
    shapes = _dynamic_shapes(traced, dynamic_batch) if dynamic else None
    program = torch.onnx.export(
        model,
        (traced,),
        dynamo=True,
        dynamic_shapes=shapes,
        custom_translation_table=onnx_translation_table(),
        opset_version=opset_version,
        input_names=["input"],
        output_names=["output"],
        verbose=False,
    )
    if program is None:  # only without dynamo; kept for the type checker
        raise RuntimeError("torch.onnx.export returned no program")
    if dynamic:
        # Dim.AUTO lets export specialise a size it cannot keep symbolic; onnxruntime would
        # then refuse other sizes. Say so now, naming the axes.
        shape = program.model.graph.inputs[0].shape
        if shape is None:
            raise RuntimeError("the exported ONNX graph has an input without a shape")
        axes = ([0] if dynamic_batch else []) + list(range(2, example.dim()))
        fixed = [a for a in axes if isinstance(shape[a], int)]
        if fixed:
            raise ValueError(
                f"the exported model has fixed sizes on input axes {fixed} (shape {list(shape)}): "
                "some operation of the model needs them static; use dynamic=False to export for "
                "this shape only"
            )
    program.save(os.fspath(path))
    return program


def count_onnx_nodes(path: Union[str, "os.PathLike[str]"]) -> int:
    """Number of nodes of an ONNX file, counting those inside subgraphs (``Scan`` bodies) and
    local functions once each."""
    import onnx

    model = onnx.load(os.fspath(path))

    def count(graph: Any) -> int:
        total = 0
        for node in graph.node:
            total += 1
            for attr in node.attribute:
                if attr.g is not None and attr.type == onnx.AttributeProto.GRAPH:
                    total += count(attr.g)
                for g in attr.graphs:
                    total += count(g)
        return total

    return count(model.graph) + sum(count(f) for f in model.functions)
