"""Sliding-window inference: run a patch-trained model over a whole image or volume.

The volume is covered by overlapping windows of ``patch_size``; the model's outputs for the
windows are blended with a weight map (a Gaussian that trusts window centres more than their
borders, or a constant) and normalised by the summed weights, so every voxel's result is a
weighted mean of the predictions of all windows that cover it. Works for 2D ``(B, C, H, W)``
and 3D ``(B, C, D, H, W)`` inputs alike.

:func:`evaluate_volumes` tests a model on whole volumes this way; its result has the format of
:mod:`spatialrec.summary`, the same as :func:`spatialrec.train.evaluate`.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

logger = logging.getLogger(__name__)

BLEND_MODES: tuple[str, ...] = ("gaussian", "constant")

SizeArg = Union[int, Sequence[int]]


def _as_sizes(name: str, value: SizeArg, ndim: int) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if isinstance(value, int):
        sizes: tuple[int, ...] = (value,) * ndim
    else:
        try:
            sizes = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {type(value).__name__}") from None
        if len(sizes) != ndim or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise ValueError(f"{name} must be an int or {ndim} ints (one per spatial axis), got {value!r}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name} must be >= 1 on every axis, got {sizes}")
    return sizes


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis.

    Windows step by ``max(1, floor(patch * (1 - overlap)))`` from 0; the last window is moved to
    end exactly at ``size``, so the axis is covered and no window sticks out. A ``patch >= size``
    gives the single start 0 (the caller shrinks the window to the axis).

    Example:
        >>> window_starts(10, 4, 0.5)
        [0, 2, 4, 6]
        >>> window_starts(11, 4, 0.5)
        [0, 2, 4, 6, 7]
    """
    if patch >= size:
        return [0]
    step = max(1, int(math.floor(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def blend_weights(
    patch_size: Sequence[int],
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    min_weight: float = 1e-3,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """The weight map of one window, ``patch_size``-shaped, float32, maximum 1.

    ``"gaussian"``: the product over axes of ``exp(-(i - c)^2 / (2 sigma^2))`` with ``c`` the
    axis centre and ``sigma = sigma_scale * patch``; values below ``min_weight`` are raised to it
    so that a voxel covered only by window borders still gets a well-conditioned mean.
    ``"constant"``: all ones (plain averaging).

    Raises:
        ValueError: unknown ``mode`` or a non-positive ``sigma_scale``/``min_weight``.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"blend={mode!r} is not valid; expected one of {BLEND_MODES}")
    if mode == "constant":
        return torch.ones(tuple(patch_size), dtype=torch.float32, device=device)
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    if not 0 < min_weight <= 1:
        raise ValueError(f"min_weight must be in (0, 1], got {min_weight}")
    w = torch.ones((), dtype=torch.float32, device=device)
    for p in patch_size:
        i = torch.arange(p, dtype=torch.float32, device=device)
        sigma = sigma_scale * p
        g = torch.exp(-((i - (p - 1) / 2) ** 2) / (2 * sigma**2))
        w = w[..., None] * g
    return (w / w.max()).clamp_min(min_weight)


@torch.no_grad()
def sliding_window_inference(
    model: Callable[[torch.Tensor], torch.Tensor],
    volume: torch.Tensor,
    patch_size: SizeArg,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 1,
    device: Optional[Union[str, torch.device]] = None,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Predict a whole image or volume from overlapping windows, blended.

    Args:
        model: maps ``(N, C, *patch)`` to ``(N, K, *patch)`` (e.g. logits). Put it in ``eval()``
            mode first; this function does not change its mode. Runs under ``torch.no_grad``.
        volume: ``(B, C, D, H, W)`` (or ``(B, C, H, W)``) input.
        patch_size: window size, an int or one int per spatial axis. An axis shorter than the
            window is processed whole (the window shrinks to it), so a volume that fits in one
            window gives exactly ``model(volume)``.
        overlap: fraction of a window shared with the next one along each axis, in ``[0, 1)``.
        blend: ``"gaussian"`` (default; centres count more than borders) or ``"constant"``.
        batch_size: windows per model call.
        device: where the model runs (default: the volume's device). Windows are moved there
            one batch at a time; the blended result is accumulated on the volume's device, so a
            large volume can stay in CPU memory while a GPU runs the model.
        sigma_scale: Gaussian sigma as a fraction of the window size (default 1/8).

    Returns:
        ``(B, K, *spatial)`` float32, the weighted mean of the window outputs.

    Raises:
        TypeError/ValueError: malformed arguments, or a model output whose spatial size differs
            from its window.

    Example:
        >>> net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
        >>> sliding_window_inference(net, torch.randn(1, 1, 20, 30, 25), 16, overlap=0.25).shape
        torch.Size([1, 2, 20, 30, 25])
    """
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"volume must be a torch.Tensor of shape (B, C, D, H, W), got {type(volume).__name__}")
    if volume.dim() not in (4, 5):
        raise ValueError(f"volume must have shape (B, C, D, H, W) or (B, C, H, W), got shape {tuple(volume.shape)}")
    if min(volume.shape) < 1:
        raise ValueError(f"volume has an empty dimension: shape {tuple(volume.shape)}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    spatial = tuple(volume.shape[2:])
    patch = tuple(min(p, s) for p, s in zip(_as_sizes("patch_size", patch_size, len(spatial)), spatial))
    run_device = torch.device(device) if device is not None else volume.device
    out_device = volume.device

    weight = blend_weights(patch, blend, sigma_scale, device=out_device)
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(spatial, patch))))
    logger.debug("sliding window: %d windows of %s over %s", len(starts), patch, spatial)
    bsz = volume.shape[0]
    # Every (batch item, window) pair is one model input; batch them across both.
    jobs = [(b, st) for b in range(bsz) for st in starts]

    def window(st: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(s, s + p) for s, p in zip(st, patch))

    result: Optional[torch.Tensor] = None
    norm = torch.zeros(spatial, dtype=torch.float32, device=out_device)
    for st in starts:
        norm[window(st)] += weight
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        x = torch.stack([volume[b][(slice(None),) + window(st)] for b, st in chunk]).to(run_device)
        y = model(x)
        if not isinstance(y, torch.Tensor) or y.dim() != x.dim() or tuple(y.shape[2:]) != patch:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"model output for windows of shape {tuple(x.shape)} must be (N, K, *{patch}); got {got}"
            )
        y = y.to(device=out_device, dtype=torch.float32)
        if result is None:
            result = torch.zeros((bsz, y.shape[1]) + spatial, dtype=torch.float32, device=out_device)
        for (b, st), yi in zip(chunk, y):
            result[(b, slice(None)) + window(st)] += yi * weight
    assert result is not None  # at least one window always exists
    return result / norm


def evaluate_volumes(
    model: torch.nn.Module,
    volumes: Sequence[Mapping[str, Any]],
    patch_size: Optional[SizeArg] = None,
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 1,
    device: Optional[Union[str, torch.device]] = None,
    threshold: float = 0.5,
    hd95: bool = True,
    class_names: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """Case-level Dice, IoU and HD95 of a model on whole volumes (or images), one case at a time.

    Each item is predicted whole, by :func:`sliding_window_inference` with ``patch_size`` or,
    with ``patch_size=None``, by one forward pass; thresholded (``sigmoid(logits) >
    threshold``) and compared with its mask by :func:`spatialrec.summary.case_metrics`, HD95 in
    millimetres with the item's ``"spacing"`` (voxels when it has none). The result has the
    format of :func:`spatialrec.summary.summarise`, the same as :func:`spatialrec.train.evaluate`.

    Args:
        model: maps ``(N, C, *patch)`` to logits ``(N, K, *patch)``; it is put in ``eval()`` mode
            for the evaluation and restored afterwards.
        volumes: items ``{"image": (C, D, H, W), "mask": (K, D, H, W), "id": str,
            ["spacing": (3,)]}`` (e.g. :class:`spatialrec.data.volumes3d.CTVolumes`), or 2D items
            ``(C, H, W)`` / ``(K, H, W)`` with ``"spacing": (2,)``; all of one kind.
        patch_size: window size for sliding-window inference, or ``None`` for one forward pass
            of the whole item.
        overlap, blend, batch_size, device: as for :func:`sliding_window_inference` (``device``
            is also where the whole-item forward pass runs).
        threshold: on the sigmoid probability.
        hd95: also compute HD95 (slow on large volumes: it compares surface voxels).
        class_names: ``K`` names for the per-class entries (default ``"class_0"``, ...).

    Returns:
        The summary of :func:`spatialrec.summary.summarise` (format in :mod:`spatialrec.summary`).
    """
    from . import summary as Sm

    if len(volumes) == 0:
        raise ValueError("volumes is empty: there is nothing to evaluate")
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    ndim: Optional[int] = None
    with_spacing = 0
    try:
        for i in range(len(volumes)):
            item = volumes[i]
            image = torch.as_tensor(item["image"]).float()
            mask = torch.as_tensor(item["mask"])
            case_id = item.get("id", i)
            if image.dim() not in (3, 4) or mask.dim() != image.dim() or (ndim is not None and image.dim() != ndim):
                expected = "(C, D, H, W) and (K, D, H, W)" if (ndim or image.dim()) == 4 else "(C, H, W) and (K, H, W)"
                raise ValueError(
                    f"volume {case_id!r}: image and mask must be {expected} like the other items, got "
                    f"{tuple(image.shape)} and {tuple(mask.shape)}"
                )
            ndim = image.dim()
            if patch_size is None:
                with torch.no_grad():
                    run_on = torch.device(device) if device is not None else image.device
                    logits = model(image[None].to(run_on)).float().cpu()
            else:
                logits = sliding_window_inference(model, image[None], patch_size, overlap, blend, batch_size, device)
            if logits.shape[1:] != mask.shape:
                raise ValueError(
                    f"volume {case_id!r}: prediction has shape {tuple(logits.shape[1:])}, mask {tuple(mask.shape)}"
                )
            pred = torch.sigmoid(logits) > threshold
            tgt = (mask > 0.5)[None]
            values = Sm.case_metrics(pred, tgt, spacing=item.get("spacing"), hd95=hd95)
            with_spacing += item.get("spacing") is not None
            rows.extend(Sm.case_rows([case_id], values))
    finally:
        model.train(was_training)
    assert ndim is not None
    unit = Sm.hd95_unit(with_spacing, len(rows))
    return Sm.summarise(rows, case_kind=Sm.case_kind(ndim - 1), class_names=class_names, hd95_unit=unit)


__all__ = ["BLEND_MODES", "blend_weights", "evaluate_volumes", "sliding_window_inference", "window_starts"]
