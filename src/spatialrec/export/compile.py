"""``compile_dynamic``: ``torch.compile`` whose training step does not recompile per image size."""

from __future__ import annotations

from typing import Any

import torch

from ._inductor import check_supported, conv_backward_fallback

__all__ = ["compile_dynamic"]


class _ScopedFallback:
    """Forward hooks that open :func:`conv_backward_fallback` around each call of one compiled
    module, the only time inductor compiles its graphs. A stack, because the module may be
    called again inside its own call (hooks of a nested call close before the outer ones)."""

    def __init__(self) -> None:
        self._open: list[Any] = []

    def enter(self, module: torch.nn.Module, args: Any) -> None:
        ctx = conv_backward_fallback()
        ctx.__enter__()
        self._open.append(ctx)

    def exit(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._open:
            self._open.pop().__exit__(None, None, None)


def compile_dynamic(model: torch.nn.Module, **compile_kwargs: Any) -> Any:
    """``torch.compile(model, fullgraph=True, dynamic=True)`` whose training step does not recompile
    for every new image size.

    Inductor (checked on torch 2.13 and 2.14, CPU) specialises a convolution's backward to the
    first image size it sees, for any convolutional network (``nn.Sequential(Conv2d, Tanh,
    Conv2d)`` too), in two places: its lowering of ``aten.convolution_backward`` guards the
    gradient's strides to integers, and its channels-last layout optimisation re-strides the
    saved activations with the example's integer strides. A plain compiled training step
    therefore recompiles (about a minute for ``sdn_unet``) for every new image size. This
    function compiles with layout optimisation off (an option of this compilation only) and
    makes inductor run ``aten.convolution_backward`` as the ATen kernel eager uses, **only while
    the returned module is being called** (when inductor compiles its graphs, the backward
    included): afterwards inductor's lowering table is as it was, so other models compiled in
    the process are compiled as without this function. Graphs compiled this way are also kept
    apart in inductor's caches. Eval graphs are dynamic with plain ``torch.compile`` too.

    Inductor may still add a size-range guard (e.g. a reduction over more than 4096 elements takes
    another accumulation scheme in its C++ code), so a size past such a threshold compiles one
    more graph, once: the number of graphs is bounded, not one per size.

    Call the returned module (``compiled(x)``), not ``compiled.forward(x)``: the change is made
    by forward hooks of the returned module, which a direct ``forward`` call skips (it would
    compile as plain ``torch.compile``, one graph per training size).

    Args:
        model: the module to compile.
        **compile_kwargs: passed to ``torch.compile`` (``fullgraph`` and ``dynamic`` default to
            ``True``; ``options`` are merged, with ``layout_optimization`` set to ``False``).

    Returns:
        The compiled module (``torch.compile``'s, with the two forward hooks).

    Raises:
        RuntimeError: this torch's inductor internals differ from those the change relies on
            (checked here, before compiling anything).

    Example:
        >>> # skip: compiling takes minutes on a CPU (a C++ toolchain builds the kernels)
        >>> from spatialrec import create_model
        >>> compiled = compile_dynamic(create_model("sdn_unet"))
        >>> compiled(torch.randn(2, 3, 96, 128)).mean().backward()
        >>> compiled(torch.randn(2, 3, 112, 80)).mean().backward()
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inductor = compile_kwargs.get("backend", "inductor") == "inductor"
    if inductor:
        check_supported()
        options = dict(compile_kwargs.pop("options", None) or {})
        options.setdefault("layout_optimization", False)
        compile_kwargs["options"] = options
    compile_kwargs.setdefault("fullgraph", True)
    compile_kwargs.setdefault("dynamic", True)
    compiled = torch.compile(model, **compile_kwargs)
    if inductor:
        if not isinstance(compiled, torch.nn.Module):  # torch.compile of a module is a module
            raise TypeError(f"torch.compile returned {type(compiled).__name__} for a module")
        scope = _ScopedFallback()
        compiled.register_forward_pre_hook(scope.enter)
        # always_call: the context closes even when the call raises.
        compiled.register_forward_hook(scope.exit, always_call=True)
    return compiled
