"""A registry of ready-made models: ``create_model(name, ...)``, ``list_models()``, ``register_model``.

A registry entry is a plain function ``entry(in_channels, num_classes, **overrides) -> nn.Module``
whose docstring gives its defaults; ``overrides`` replace any constructor argument of the model
class it builds (``base_width``, ``depth``, ``state_size``, ``backend``, ...).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Optional, Union, overload

from torch import nn

from .transunet import TransUNet
from .unet import UNet, check_int, published_unet_levels
from .unet_pp import UNetPlusPlus

ModelFn = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFn] = {}


@overload
def register_model(fn: ModelFn) -> ModelFn: ...
@overload
def register_model(fn: None = None, *, name: Optional[str] = None, overwrite: bool = False) -> Callable[[ModelFn], ModelFn]: ...
def register_model(
    fn: Optional[ModelFn] = None, *, name: Optional[str] = None, overwrite: bool = False
) -> Union[ModelFn, Callable[[ModelFn], ModelFn]]:
    """Register a model entry function under ``name`` (default: the function's name).

    The function is called as ``fn(in_channels=..., num_classes=..., **overrides)`` by
    :func:`create_model` and must return an ``nn.Module``. Usable bare (``@register_model``) or
    with arguments (``@register_model(name="my_net")``).

    Raises:
        ValueError: the name is taken and ``overwrite`` is False.
        TypeError: ``fn`` is not callable or ``name`` not a non-empty string.

    Example:
        >>> @register_model(name="tiny_sdn_unet")
        ... def tiny_sdn_unet(in_channels: int, num_classes: int, **overrides):
        ...     kw = dict(base_width=8, depth=3, encoder_sdn=(1,), state_size=16) | overrides
        ...     return UNet(in_channels, num_classes, **kw)
        >>> "tiny_sdn_unet" in list_models()
        True
    """

    def decorate(f: ModelFn) -> ModelFn:
        if not callable(f):
            raise TypeError(f"register_model needs a callable, got {type(f).__name__}")
        key = f.__name__ if name is None else name
        if not isinstance(key, str) or not key:
            raise TypeError(f"model name must be a non-empty string, got {key!r}")
        if key in _REGISTRY and not overwrite:
            raise ValueError(f"a model named {key!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[key] = f
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


def list_models(pattern: Optional[str] = None) -> list[str]:
    """Names of the registered models, sorted; ``pattern`` filters them (shell-style, e.g. ``"sdn_*"``)."""
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_model(name: str, in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        in_channels: channels of the input images (3 for RGB, 1 for CT).
        num_classes: channels of the output logits (foreground classes; 1 for binary tasks).
        **overrides: constructor arguments that replace the entry's defaults, e.g.
            ``base_width=16, state_size=64, backend="fused"``.

    Returns:
        An ``nn.Module`` mapping ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names).
        TypeError: an override is not an argument of the model.

    Example:
        >>> model = create_model("sdn_unet", in_channels=3, num_classes=1, state_size=32)
        >>> type(model).__name__
        'UNet'
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **overrides)


# ----------------------------------------------------------------------------- built-in entries


@register_model
def unet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNet:
    """Plain U-Net: ``depth=4``, ``base_width=32`` (32..512), bilinear up-sampling, VGG blocks."""
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "bilinear": True}
    kw.update(overrides)
    return UNet(in_channels, num_classes, **kw)


@register_model
def sdn_unet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNet:
    """SDN-UNet: the U-Net with SDN blocks (S=150, right then down) in the encoder.

    The configuration the published script builds with ``--block vgg --n_layers 4
    --feat_start 32 --bilinear True --sdn_b_enc True --sdn_b_dec False`` and its default
    ``--sdn_n_layers 3``: SDN blocks at encoder levels 1-4 (every down-sampling stage), plain
    VGG blocks at level 0 and in the decoder. Overriding ``depth`` keeps the published rule
    (levels ``1 .. min(depth, 4)``) unless ``encoder_sdn`` is given.
    """
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "bilinear": True, "sdn_block": "sdn", "state_size": 150}
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        check_int("depth", kw["depth"])
        kw["encoder_sdn"] = published_unet_levels(kw["depth"], "vgg", True, False, 3)[0]
    return UNet(in_channels, num_classes, **kw)


@register_model
def unet_pp(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNetPlusPlus:
    """Plain UNet++: ``depth=4``, widths 32..512, bilinear up-sampling, no deep supervision."""
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "deep_supervision": False}
    kw.update(overrides)
    return UNetPlusPlus(in_channels, num_classes, **kw)


@register_model
def sdn_unet_pp(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> UNetPlusPlus:
    """SDN-UNet++: UNet++ with residual SDN blocks (S=150, right then down) in the encoder.

    The published nested U-Net with ``--n_layers 4 --sdn_b_enc True --sdn_b_dec False`` and
    the default ``--sdn_n_layers 3``: residual SDN blocks at encoder nodes ``X[0,0] .. X[3,0]``,
    VGG blocks elsewhere. Overriding ``depth`` keeps levels ``0 .. min(depth, 3)`` unless
    ``encoder_sdn`` is given.
    """
    kw: dict[str, Any] = {"depth": 4, "base_width": 32, "sdn_block": "residual_sdn", "state_size": 150}
    kw.update(overrides)
    if "encoder_sdn" not in overrides:
        check_int("depth", kw["depth"])
        kw["encoder_sdn"] = tuple(range(min(kw["depth"], 3) + 1))
    return UNetPlusPlus(in_channels, num_classes, **kw)


@register_model
def transunet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> TransUNet:
    """TransUNet-style hybrid without SDN: U-Net encoder/decoder (``depth=4``, widths 32..512)
    and a Transformer on the 1/16 map (4 layers, width 256, 8 heads, MLP ratio 4, dropout 0.1,
    position embeddings for 128x128 inputs)."""
    kw: dict[str, Any] = {
        "depth": 4, "base_width": 32, "img_size": 128, "transformer_dim": 256, "transformer_layers": 4,
        "transformer_heads": 8, "mlp_ratio": 4.0, "dropout": 0.1,
    }  # fmt: skip
    kw.update(overrides)
    return TransUNet(in_channels, num_classes, **kw)


@register_model
def sdn_transunet(in_channels: int = 3, num_classes: int = 1, **overrides: Any) -> TransUNet:
    """SDN-Transformer hybrid: :func:`transunet` with SDN blocks (S=150, right then down) in
    the decoder at levels ``1 .. depth-1`` (1/8, 1/4, 1/2 for ``depth=4``): self-attention
    on the coarsest map, spatial recurrence on the finer ones, a plain full-resolution block
    last. Pass ``encoder_sdn`` to add SDN to the high-resolution encoder levels too."""
    kw: dict[str, Any] = {
        "depth": 4, "base_width": 32, "img_size": 128, "transformer_dim": 256, "transformer_layers": 4,
        "transformer_heads": 8, "mlp_ratio": 4.0, "dropout": 0.1, "sdn_block": "sdn", "state_size": 150,
    }  # fmt: skip
    kw.update(overrides)
    if "decoder_sdn" not in overrides:
        check_int("depth", kw["depth"])
        kw["decoder_sdn"] = tuple(range(1, kw["depth"]))
    return TransUNet(in_channels, num_classes, **kw)


__all__ = ["create_model", "list_models", "register_model", "unregister_model"]
