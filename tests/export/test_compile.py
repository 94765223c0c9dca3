"""torch.compile of SDN layers and models (spatialrec.export.compile): one graph for every size,
training and eval, gradients against eager; compile_dynamic's change to inductor lasts only
while its module is called.

Compiles take seconds to tens of seconds each on the CI CPU: the default run covers the SDN
layer and the scope of compile_dynamic; every registry model runs under ``-m slow``.
"""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer, create_model
from spatialrec.export import compile_dynamic
from spatialrec.models import list_models

S = 4
TINY = dict(base_width=4, depth=2, state_size=4)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **TINY)


def _shapes(model: torch.nn.Module, sizes: list[tuple[int, ...]], batch: int = 2) -> list[tuple[int, ...]]:
    return [(batch, model.in_channels, *s) for s in sizes]


def _sizes(name: str) -> list[tuple[int, ...]]:
    # Batch 2 (a batch of 1 is specialised) and not square first: see docs/deploy.md (an inductor
    # bug with duck-shaped H == W in training).
    return [(8, 12, 10), (9, 11, 13)] if name.endswith("3d") else [(16, 20), (17, 23)]


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




# ------------------------------------------------------------------------------ compile_dynamic's scope


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(2, 1, 3, padding=1))


def _conv_backward_lowering() -> object:
    from torch._inductor import lowering

    return lowering.lowerings[torch.ops.aten.convolution_backward.default]


def _recompiles(compiled: torch.nn.Module) -> bool:
    """Whether a compiled training step compiles again for a second image size."""
    torch.manual_seed(0)
    compiled(torch.randn(2, 1, 6, 7)).square().mean().backward()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled(torch.randn(2, 1, 9, 5)).square().mean().backward()
    except torch._dynamo.exc.RecompileError:
        return True
    return False


def test_compile_dynamic_swaps_the_lowering_only_during_a_call() -> None:
    """compile_dynamic changes nothing by itself; a call of its module (when inductor compiles)
    has the ATen fallback for the convolution backward in, and inductor's own lowering is back
    after the call, also when the call raises."""
    own = _conv_backward_lowering()
    assert not getattr(own, "_is_fallback_handler", False), "an earlier compile_dynamic left its fallback in"
    compiled = compile_dynamic(_conv_net())
    assert _conv_backward_lowering() is own
    during: list[object] = []
    compiled.register_forward_pre_hook(lambda module, args: during.append(_conv_backward_lowering()))
    with pytest.raises(RuntimeError):
        compiled(torch.randn(2, 3, 6, 7))  # 3 channels for a 1-channel convolution: fails while tracing
    assert len(during) == 1 and getattr(during[0], "_is_fallback_handler", False)
    assert _conv_backward_lowering() is own
    assert not torch._functorch.config.force_non_lazy_backward_lowering
    torch._dynamo.reset()


@pytest.mark.slow
def test_compile_dynamic_leaves_inductor_as_it_found_it() -> None:
    """compile_dynamic's fallback for the convolution backward is in while its module compiles
    (one graph for two sizes) and out afterwards: inductor's own lowering is back, and a later
    plain ``torch.compile`` recompiles (or not) exactly as one compiled before it did."""
    own = _conv_backward_lowering()
    assert not getattr(own, "_is_fallback_handler", False), "an earlier compile_dynamic left its fallback in"
    tag = torch.compiler.config.cache_key_tag
    plain = dict(dynamic=True, fullgraph=True, options={"layout_optimization": False})
    # No cache: a later compilation must not be served an earlier one's graph here.
    with torch.compiler.config.patch(force_disable_caches=True):
        torch._dynamo.reset()
        before = _recompiles(torch.compile(_conv_net(), **plain))
        torch._dynamo.reset()
        assert not _recompiles(compile_dynamic(_conv_net()))
        assert _conv_backward_lowering() is own
        assert torch.compiler.config.cache_key_tag == tag
        assert not torch._functorch.config.force_non_lazy_backward_lowering
        torch._dynamo.reset()
        after = _recompiles(torch.compile(_conv_net(), **plain))
    torch._dynamo.reset()
    assert after == before


def test_compile_dynamic_refuses_a_non_module() -> None:
    with pytest.raises(TypeError, match="model"):
        compile_dynamic(lambda x: x)  # type: ignore[arg-type]
