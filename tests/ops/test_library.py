"""The registered ops (spatialrec.ops.library): every backend's forward and own backward through
the one path eager and traced code share, what the forward keeps, and the Triton fallback's
hand-over of states. Schema/fake/autograd checks (opcheck, both carries) live in tests/ops/test_op_schema.py."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spatialrec.ops import directional_gru_scan_sequence, scan_sequence
from spatialrec.ops import library

from .naive import random_params

S = 3
CASES = [(2, ("right", "up", "left")), (3, ("in", "left", "out"))]


def _inputs(dims: int, n: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((2, S, 4, 5) if dims == 2 else (1, S, 3, 4, 5), generator=g, dtype=dtype)
    k = 3 ** (dims - 1)
    params = []
    for _ in range(n):
        w_ih = (torch.rand(3 * S, k * S, generator=g, dtype=dtype) - 0.5)
        params.append((w_ih, *random_params(S, g, dtype)[1:]))
    return x.requires_grad_(), [tuple(t.requires_grad_() for t in p) for p in params]


class _Ops(TorchDispatchMode):
    """Records the spatialrec ops dispatched (name, keep_gates when given)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func.overloadpacket)
        if name.startswith("spatialrec."):
            self.calls.append((name.split(".")[1], args[4] if len(args) > 4 and isinstance(args[4], bool) else None))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("backend", ["reference", "fused", "triton"])
@pytest.mark.parametrize("dims,directions", CASES)
@pytest.mark.parametrize("gates", ["save", "recompute"])
def test_op_matches_reference_autograd(backend: str, dims: int, directions: tuple[str, ...], gates: str, carry: str, option_env) -> None:
    """Forward and each backend's own backward through the op, both cells, against autograd of the reference."""
    option_env("fused_gates", gates)
    dtype = torch.float32 if backend == "triton" else torch.float64  # the interpreter's dots are float32
    x, params = _inputs(dims, len(directions), dtype, seed=dims)
    leaves = [x] + [t for p in params for t in p]
    with _Ops() as ops:
        y = scan_sequence(x, params, directions, backend, carry=carry)
    keep = gates == "save"
    assert ops.calls == [("scan_sequence_forward", keep)]
    ref = directional_gru_scan_sequence(x, params, directions, backend="reference", carry=carry)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got, want = torch.autograd.grad(y, leaves, g), torch.autograd.grad(ref, leaves, g)
    tol = dict(rtol=1e-10, atol=1e-11) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, ref, **tol)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    fmt = library.output_format(x)
    assert y.is_contiguous(memory_format=fmt) and got[0].is_contiguous(memory_format=fmt) and all(a.is_contiguous() for a in got[1:])


@pytest.mark.parametrize("dims,directions", CASES)
def test_forward_keeps_what_the_backend_backward_reads(dims: int, directions: tuple[str, ...]) -> None:
    x, params = _inputs(dims, len(directions), torch.float32)
    flat = [t for p in params for t in p]
    codes = library.directions_to_codes(directions)
    n = len(directions)
    _, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, codes, "fused", True, "prior")
    # 2D: states and gates per sweep; 3D: states per sweep (its backward recomputes all gates at once).
    assert len(saved) == (2 * n if dims == 2 else n)
    assert all(t.dtype == torch.float32 and t.is_contiguous() and not t.requires_grad for t in saved)
    _, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, codes, "fused", False, "line")
    assert len(saved) == n
    _, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, codes, "reference", True, "prior")
    assert saved == []


def test_which_op_and_what_it_keeps(option_env) -> None:
    """Gates only where a backward can follow; nothing (the inference op) where none can."""
    x, params = _inputs(2, 2, torch.float32)
    frozen = [tuple(t.detach() for t in p) for p in params]

    def calls(fn) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
        with _Ops() as ops:
            fn()
        return ops.calls

    run = lambda x, p: scan_sequence(x, p, ("right", "down"), "fused")  # noqa: E731
    assert calls(lambda: run(x, params)) == [("scan_sequence_forward", True)]
    assert calls(lambda: run(x.detach(), frozen)) == [("scan_sequence", None)]
    assert calls(lambda: run(x.detach(), params)) == [("scan_sequence_forward", True)]  # parameters alone
    with torch.no_grad():
        assert calls(lambda: run(x, params)) == [("scan_sequence", None)]
    with torch.inference_mode():
        assert calls(lambda: run(x, params)) == [("scan_sequence", None)]
    option_env("fused_gates", "recompute")
    assert calls(lambda: run(x, params)) == [("scan_sequence_forward", False)]


@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("dims,directions", CASES)
def test_triton_fallback_hands_over_states_in_triton_layout(dims: int, directions: tuple[str, ...], carry: str, monkeypatch) -> None:
    """After a Triton failure under "auto", the fused backend's saved states must be exactly the
    Triton layout a compiled graph's fake declared, and the backward must read them back."""
    x, params = _inputs(dims, len(directions), torch.float32)
    flat = [t.detach() for p in params for t in p]
    names = tuple(directions)
    ps = library._unflatten(flat)
    y_t, saved_t = library._triton_forward(x.detach(), ps, names, True, True, carry)
    y_f, saved_f = library._fused_forward_in_triton_layout(x.detach(), ps, names, True, True, carry)
    torch.testing.assert_close(y_f, y_t, rtol=1e-4, atol=1e-5)
    assert [t.shape for t in saved_f] == [t.shape for t in saved_t]
    for a, b in zip(saved_f, saved_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # The fakes declare that layout for "auto" on a device where Triton runs.
    monkeypatch.setattr(library, "_layout_backend", lambda backend, x: "triton")
    fakes = library._saved_fakes(x, flat, library.directions_to_codes(names), "auto", True)
    assert [t.shape for t in fakes] == [t.shape for t in saved_t]
    # The backward, run by the fused backend on Triton-layout states.
    monkeypatch.setattr(library, "resolve_backend", lambda backend, x=None: "fused")
    g = torch.randn_like(y_t)
    got = library._backward(g, x.detach(), flat, saved_f, library.directions_to_codes(names), "auto", carry)
    leaves = [x] + [t for p in params for t in p]
    want = torch.autograd.grad(directional_gru_scan_sequence(x, params, names, backend="reference", carry=carry), leaves, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_op_validates_direct_calls() -> None:
    x, params = _inputs(2, 1, torch.float32)
    flat = [t.detach() for p in params for t in p]
    with pytest.raises(ValueError, match="params has 3 tensors for 1 directions"):
        torch.ops.spatialrec.scan_sequence(x.detach(), flat[:3], [0], "fused", "prior")
    with pytest.raises(ValueError, match="weight_hh has shape"):
        torch.ops.spatialrec.scan_sequence(x.detach(), [flat[0], flat[0], flat[2], flat[3]], [0], "fused", "prior")
    with pytest.raises(ValueError, match="is not a cell"):
        torch.ops.spatialrec.scan_sequence(x.detach(), flat, [0], "fused", "both")


@pytest.mark.parametrize("dims,directions", CASES)
def test_op_under_auto_falls_back_when_triton_fails(dims: int, directions: tuple[str, ...], monkeypatch, option_env, request) -> None:
    """"auto" chose Triton (as on a GPU) and its forward kernel fails: the op warns once, runs the
    fused backend, hands the states over in Triton's layout, and its backward still matches."""
    pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources

    from spatialrec import options
    from spatialrec.ops import scan as scan_module
    from spatialrec.ops import triton as triton_backend

    class Failing:
        def __getitem__(self, grid):  # type: ignore[no-untyped-def]
            def launch(*args, **kwargs):  # type: ignore[no-untyped-def]
                raise OutOfResources(232448, 101376, "shared memory")

            return launch

    option_env("backend", None)
    monkeypatch.setattr(scan_module, "triton_device", lambda x: True)
    monkeypatch.setattr(library, "triton_device", lambda x: True)
    options.reset_triton_fallback()
    request.addfinalizer(options.reset_triton_fallback)  # no device stays on fused after the test
    monkeypatch.setattr(triton_backend, "_fwd_line", Failing())
    x, params = _inputs(dims, len(directions), torch.float32)
    leaves = [x] + [t for p in params for t in p]
    with pytest.warns(RuntimeWarning, match="OutOfResources"):
        y = scan_sequence(x, params, directions, "auto")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(y, leaves, g)
    ref = directional_gru_scan_sequence(x, params, directions, backend="fused")
    want = torch.autograd.grad(ref, leaves, g)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Later calls go to fused at once, still in Triton's layout (what a compiled fake declared).
    y2 = scan_sequence(x, params, directions, "auto")
    torch.testing.assert_close(y2, ref, rtol=1e-5, atol=1e-6)
    torch.autograd.grad(y2, leaves, g)


class _Fills(TorchDispatchMode):
    """Records the shapes of the tensors created zero-filled (``zeros``, ``zero_``, ``fill_``)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if str(func.overloadpacket).split(".")[-1] in ("zeros", "zero_", "fill_", "zeros_like", "new_zeros") and isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("gates", ["save", "recompute"])
def test_backward_gets_no_zero_gradients_for_the_saved_outputs(gates: str, option_env) -> None:
    """The states and gates are outputs of ``scan_sequence_forward`` only to reach the backward;
    autograd must not hand it a zero-filled gradient for each (a full-size fill per sweep)."""
    option_env("fused_gates", gates)
    x, params = _inputs(2, 2, torch.float32)
    flat = [t for p in params for t in p]
    _, saved = torch.ops.spatialrec.scan_sequence_forward(x, flat, library.directions_to_codes(("right", "down")), "fused", gates == "save", "prior")
    saved_shapes = {tuple(t.shape) for t in saved}
    y = scan_sequence(x, params, ("right", "down"), "fused")
    with _Fills() as fills:
        y.backward(torch.ones_like(y))
    assert x.grad is not None and all(t.grad is not None for t in flat)
    assert not saved_shapes & set(fills.shapes), fills.shapes

