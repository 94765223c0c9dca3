"""Which input pixels can change one output pixel: the effective receptive field (ERF).

:func:`effective_receptive_field` differentiates one output logit ``model(x)[b, c, *point]``
with respect to the input and aggregates the gradient over the input channels: a map over the
image, zero wherever no path of the network connects that pixel to ``point``. Its support is the
*theoretical* receptive field for this input (exactly zero outside it); its magnitude is the
*effective* one (Luo et al., 2016: in a deep CNN most of the gradient sits near the centre).
For a U-Net the support is a square of a few dozen pixels; for a single SDN ``down`` sweep it is
every row above the pixel (inside a widening cone); for a Transformer on the coarsest map it is
the whole image.

The gradient is taken with the model in ``eval()`` mode (batch-norm with running statistics, no
dropout; otherwise the other images of a batch would leak into the map), and the model's
mode is restored afterwards. Parameter gradients are neither computed nor touched.

:func:`erf_rgb` turns a map into an image (log-scaled, so the far tails are visible) for figures
drawn without matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["effective_receptive_field", "erf_rgb", "prediction_rgb", "receptive_field_support"]

_AGGREGATES = ("abs", "sum", "l2")


def effective_receptive_field(
    model: nn.Module,
    x: torch.Tensor,
    point: Sequence[int],
    channel: int = 0,
    aggregate: str = "abs",
) -> torch.Tensor:
    """The gradient of one output pixel's logit with respect to the input, over channels.

    Args:
        model: maps ``(B, C, *spatial)`` to logits ``(B, K, *spatial')``.
        x: one input, ``(C, *spatial)`` or ``(1, C, *spatial)`` (2D or 3D); not modified.
        point: index of the output pixel, ``(row, col)`` (``(depth, row, col)`` in 3D); negative
            indices count from the end.
        channel: output channel (class) whose logit is differentiated; default 0.
        aggregate: how the input channels are combined: ``"abs"`` (sum of absolute values,
            default), ``"sum"`` (signed sum) or ``"l2"`` (Euclidean norm).

    Returns:
        float32 ``(*spatial)``: the map, on ``x``'s device.

    Example:
        >>> conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        >>> erf = effective_receptive_field(conv, torch.randn(1, 9, 9), (4, 4))
        >>> erf.shape, int((erf != 0).sum())
        (torch.Size([9, 9]), 9)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor (C, *spatial) or (1, C, *spatial), got {type(x).__name__}")
    try:
        point = tuple(int(p) for p in point)
    except (TypeError, ValueError):
        raise TypeError(f"point must be a sequence of 2 (or 3) ints, got {point!r}") from None
    if len(point) not in (2, 3):
        raise ValueError(f"point must be (row, col) or (depth, row, col), got {point}")
    if x.dim() == len(point) + 1:
        x = x[None]
    if x.dim() != len(point) + 2 or x.shape[0] != 1:
        raise ValueError(
            f"x must be one input (C, *spatial) or (1, C, *spatial) with {len(point)} spatial dims (as point), "
            f"got shape {tuple(x.shape)}"
        )
    if aggregate not in _AGGREGATES:
        raise ValueError(f"aggregate must be one of {_AGGREGATES}, got {aggregate!r}")
    was_training = model.training
    model.eval()
    try:
        inp = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(inp)
            if out.dim() != inp.dim():
                raise ValueError(f"model output must have shape (1, K, *spatial), got {tuple(out.shape)}")
            if not -out.shape[1] <= channel < out.shape[1]:
                raise ValueError(f"channel must index the {out.shape[1]} output channels, got {channel}")
            for p, n in zip(point, out.shape[2:]):
                if not -n <= p < n:
                    raise ValueError(f"point {point} is outside the output of spatial shape {tuple(out.shape[2:])}")
            index = (0, channel, *point)
            (grad,) = torch.autograd.grad(out[index], inp)
    finally:
        model.train(was_training)
    g = grad[0].float()
    if aggregate == "abs":
        return g.abs().sum(0)
    if aggregate == "sum":
        return g.sum(0)
    return g.pow(2).sum(0).sqrt()


def receptive_field_support(erf: torch.Tensor, rel_threshold: float = 0.0) -> torch.Tensor:
    """bool mask of the pixels whose ERF magnitude exceeds ``rel_threshold * max``.

    With the default 0 it is the theoretical receptive field (every pixel with any influence);
    e.g. ``0.01`` keeps the pixels with at least 1% of the strongest influence.
    """
    if not 0.0 <= rel_threshold < 1.0:
        raise ValueError(f"rel_threshold must be in [0, 1), got {rel_threshold}")
    mag = erf.abs()
    return mag > rel_threshold * mag.max()


def erf_rgb(erf: torch.Tensor, decades: float = 4.0) -> torch.Tensor:
    """A 2D ERF map as an RGB image, uint8 ``(H, W, 3)``.

    The magnitude is shown on a log scale over ``decades`` powers of ten below its maximum
    (black: no influence or less than ``10**-decades`` of the maximum; dark red to yellow to
    white: more), so both the strong centre and the weak far tail of the map are visible.
    """
    if erf.dim() != 2:
        raise ValueError(f"erf must be a 2D map (H, W), got shape {tuple(erf.shape)}")
    if not decades > 0:
        raise ValueError(f"decades must be > 0, got {decades}")
    mag = erf.detach().abs().float().cpu()
    top = float(mag.max())
    if top <= 0:
        return torch.zeros(*mag.shape, 3, dtype=torch.uint8)
    t = ((torch.log10(mag.clamp_min(top * 10 ** (-decades))) - torch.log10(torch.tensor(top))) / decades + 1).clamp(0, 1)
    t = torch.where(mag > 0, t, torch.zeros_like(t))
    # A "hot" colour map, black -> red -> yellow -> white as t goes 0 -> 1: channel k rises over [k/3, (k+1)/3].
    rgb = torch.stack([(3 * t - k).clamp(0, 1) for k in range(3)], -1)
    return (rgb * 255).round().to(torch.uint8)


def prediction_rgb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A 2D binary prediction against its ground truth as an RGB image, uint8 ``(H, W, 3)``:
    white where both are set, red false positives, blue false negatives, black elsewhere."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must be 2D maps of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = pred.detach().cpu().bool(), target.detach().cpu().bool()
    rgb = torch.zeros(*p.shape, 3, dtype=torch.uint8)
    rgb[p & t] = torch.tensor([255, 255, 255], dtype=torch.uint8)
    rgb[p & ~t] = torch.tensor([230, 40, 40], dtype=torch.uint8)
    rgb[~p & t] = torch.tensor([40, 90, 230], dtype=torch.uint8)
    return rgb
