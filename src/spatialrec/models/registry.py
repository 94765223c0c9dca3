"""The model registry mechanism: ``register_model``, ``create_model(name, ...)``, ``list_models()``.

A registry entry is a plain function ``entry(in_channels=..., num_classes=..., **overrides) ->
nn.Module`` whose docstring gives its defaults; ``overrides`` replace any constructor argument of
the model class it builds (``base_width``, ``depth``, ``state_size``, ``backend``, ...). Each
model module registers its own entries (timm-style, listed in :mod:`spatialrec.models`); this
module holds only the mechanism and imports no model.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, overload

from torch import nn

from ..checks import check_spatial_dims

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    fn: ModelFn
    spatial_dims: Optional[int]


_REGISTRY: dict[str, _Entry] = {}


@overload
def register_model(fn: ModelFn) -> ModelFn: ...
@overload
def register_model(
    fn: None = None, *, name: Optional[str] = None, overwrite: bool = False, spatial_dims: Optional[int] = None
) -> Callable[[ModelFn], ModelFn]: ...
def register_model(
    fn: Optional[ModelFn] = None,
    *,
    name: Optional[str] = None,
    overwrite: bool = False,
    spatial_dims: Optional[int] = None,
) -> Union[ModelFn, Callable[[ModelFn], ModelFn]]:
    """Register a model entry function under ``name`` (default: the function's name).

    The function is called as ``fn(**kwargs)`` by :func:`create_model`, with ``in_channels`` and
    ``num_classes`` only when the caller gives them (so the entry's own defaults stand), and
    must return an ``nn.Module``. Usable bare (``@register_model``) or with arguments
    (``@register_model(name="my_net", spatial_dims=2)``).

    Args:
        fn: the entry function.
        name: the registry name (default ``fn.__name__``).
        overwrite: replace an entry of the same name instead of refusing.
        spatial_dims: 2 or 3, the inputs the model takes (``(B, C, H, W)`` or ``(B, C, D, H, W)``),
            listed by :func:`list_models` and :func:`model_spatial_dims`; ``None``: not stated.

    Raises:
        ValueError: the name is taken and ``overwrite`` is False; a bad ``spatial_dims``.
        TypeError: ``fn`` is not callable or ``name`` not a non-empty string.

    Example:
        >>> from spatialrec.models import UNet
        >>> @register_model(name="tiny_sdn_unet", spatial_dims=2)
        ... def tiny_sdn_unet(in_channels: int = 3, num_classes: int = 1, **overrides):
        ...     kw = dict(base_width=8, depth=3, encoder_sdn=(1,), state_size=16) | overrides
        ...     return UNet(in_channels, num_classes, **kw)
        >>> "tiny_sdn_unet" in list_models()
        True
    """
    if spatial_dims is not None:
        check_spatial_dims(spatial_dims)

    def decorate(f: ModelFn) -> ModelFn:
        if not callable(f):
            raise TypeError(f"register_model needs a callable, got {type(f).__name__}")
        key = getattr(f, "__name__", None) if name is None else name
        if not isinstance(key, str) or not key:
            raise TypeError(f"model name must be a non-empty string, got {key!r}")
        if key in _REGISTRY and not overwrite:
            raise ValueError(f"a model named {key!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[key] = _Entry(f, spatial_dims)
        return f

    return decorate(fn) if fn is not None else decorate


def unregister_model(name: str) -> None:
    """Remove a registered model (e.g. one a test or user registered).

    Raises:
        KeyError: ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise KeyError(f"no model named {name!r} is registered; known models: {list_models()}")
    del _REGISTRY[name]


def list_models(pattern: Optional[str] = None, *, spatial_dims: Optional[int] = None) -> list[str]:
    """Names of the registered models, sorted.

    Args:
        pattern: shell-style filter on the names, e.g. ``"sdn_*"``.
        spatial_dims: keep only the models that take 2D (``2``) or 3D (``3``) inputs.

    Raises:
        TypeError: ``pattern`` is not a string.

    Example:
        >>> list_models("sdn_*", spatial_dims=3)
        ['sdn_unet3d']
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as 'sdn_*', got {type(pattern).__name__} {pattern!r}")
    if spatial_dims is not None:
        check_spatial_dims(spatial_dims)
    return sorted(
        n
        for n, e in _REGISTRY.items()
        if (pattern is None or fnmatch.fnmatchcase(n, pattern)) and (spatial_dims is None or e.spatial_dims == spatial_dims)
    )


def model_spatial_dims(name: str) -> Optional[int]:
    """The number of spatial dimensions a registered model takes (2 or 3; ``None`` if its entry
    did not say).

    Raises:
        ValueError: ``name`` is not registered.
    """
    return _entry(name).spatial_dims


def _entry(name: object) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, in_channels: Optional[int] = None, num_classes: Optional[int] = None, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Input shapes: the 2D entries (``unet``, ``sdn_unet``, ``unet_pp``, ``sdn_unet_pp``,
    ``transunet``, ``sdn_transunet``; 3 input channels by default) map ``(B, in_channels, H, W)``
    to logits ``(B, num_classes, H, W)``; the 3D entries (``unet3d``, ``sdn_unet3d``; 1 input
    channel by default, for CT) map ``(B, in_channels, D, H, W)`` to ``(B, num_classes, D, H, W)``.
    :func:`list_models` with ``spatial_dims=`` and :func:`model_spatial_dims` say which is which.

    Args:
        name: a name from :func:`list_models`.
        in_channels: channels of the input; ``None`` keeps the entry's default.
        num_classes: channels of the output logits; ``None`` keeps the entry's default (1).
        **overrides: constructor arguments that replace the entry's defaults, e.g.
            ``base_width=16, state_size=64, backend="fused"``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names).
        TypeError: an override is not an argument of the model.

    Example:
        >>> model = create_model("sdn_unet", in_channels=3, num_classes=1, state_size=32)
        >>> type(model).__name__, model.spatial_dims
        ('UNet', 2)
        >>> create_model("unet3d").in_channels
        1
    """
    entry = _entry(name)
    given = {k: v for k, v in (("in_channels", in_channels), ("num_classes", num_classes)) if v is not None}
    return entry.fn(**given, **overrides)


__all__ = ["create_model", "list_models", "model_spatial_dims", "register_model", "unregister_model"]
