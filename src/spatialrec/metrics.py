"""Segmentation metrics on binary masks, following MONAI's definitions.

Every metric takes ``pred`` and ``target`` binary one-hot masks ``(B, C, H, W)`` or
``(B, C, D, H, W)`` (bool, or numbers that are all 0 or 1) and returns a float32 ``(B, C)``
tensor: one value per image and class (an empty ``(0, C)`` tensor for an empty batch, from every
metric). ``spacing`` that is not a number, a sequence of numbers or a tensor raises ``TypeError``
naming ``spacing``. Use :func:`to_masks` to turn logits or label maps into
such masks. Only torch is used (no scipy).

Definitions (the same as ``monai.metrics`` so figures are comparable with published tables):

- Dice ``2|P∩T| / (|P|+|T|)``; IoU (Jaccard) ``|P∩T| / |P∪T|``.
- Surface of a mask: its boundary pixels, the foreground pixels that have at least one
  background face-neighbour (4-neighbourhood in 2D, 6 in 3D), pixels outside the image counting
  as background (``mask XOR binary_erosion(mask)``, as MONAI with scipy's default structure).
- Directed surface distances ``d(P->T)``: for each surface pixel of ``P`` the Euclidean distance
  (in mm with ``spacing``) to the nearest surface pixel of ``T``.
- Hausdorff distance: ``max(max d(P->T), max d(T->P))``; with ``percentile=q``:
  ``max(perc_q d(P->T), perc_q d(T->P))`` (linear interpolation as ``torch.quantile``);
  HD95 = ``percentile=95``, the larger of the two directed 95th percentiles.
- Average (symmetric) surface distance: the mean of all distances of both directions together,
  ``mean(concat(d(P->T), d(T->P)))``, as ``monai.metrics.SurfaceDistanceMetric(symmetric=True)``.

Empty masks (per image and class):

=====================  =========================  ==================================
case                   Dice / IoU                 HD / HD95 / ASD
=====================  =========================  ==================================
both empty             1.0 (nan if ignore_empty)  nan (undefined; MONAI gives nan)
target empty only      0.0 (nan if ignore_empty)  inf (MONAI gives inf)
prediction empty only  0.0                        inf (MONAI gives inf)
=====================  =========================  ==================================

``ignore_empty=True`` reproduces MONAI's ``DiceMetric``/``MeanIoU`` default (nan wherever the
target is empty, to be skipped by ``nanmean``); the default ``False`` reproduces
``ignore_empty=False``. Average with ``torch.nanmean`` and report how many values were nan/inf.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "average_surface_distance",
    "dice",
    "hausdorff_distance",
    "hd95",
    "iou",
    "surface_distances",
    "to_masks",
]

SpacingLike = Union[None, float, Sequence[float], torch.Tensor]


def _check_pair(pred: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W) or (B, C, D, H, W), got {type(t).__name__}")
        if t.dim() not in (4, 5):
            raise ValueError(f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(t.shape)}")
    assert isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    for name, t in (("pred", pred), ("target", target)):
        if t.dtype != torch.bool:
            if t.is_complex():
                raise TypeError(f"{name} must be a real tensor, got {t.dtype}")
            if not bool(((t == 0) | (t == 1)).all()):
                raise ValueError(
                    f"{name} must be a binary mask (values 0/1 or bool); threshold logits or convert label "
                    f"maps with spatialrec.metrics.to_masks first"
                )
    return pred != 0, target != 0


def to_masks(
    x: torch.Tensor,
    mode: str = "sigmoid",
    threshold: float = 0.5,
    num_classes: Optional[int] = None,
    include_background: bool = False,
) -> torch.Tensor:
    """Turn model outputs or label maps into binary one-hot masks for the metrics.

    Args:
        x: ``mode="sigmoid"``: logits ``(B, K, *spatial)``, each channel binary.
            ``mode="softmax"``: logits ``(B, C, *spatial)`` with channel 0 = background.
            ``mode="labels"``: integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.
            ``mode="probabilities"``: probabilities ``(B, K, *spatial)`` in ``[0, 1]``.
        mode: one of the above.
        threshold: on the sigmoid probability (``"sigmoid"``) or on ``x``
            (``"probabilities"``), strictly greater counts as foreground.
        num_classes: ``"labels"`` only: the number of classes including background (required).
        include_background: ``"softmax"`` and ``"labels"`` only: keep channel 0 (background).

    Returns:
        bool ``(B, C', *spatial)``; ``C' = K`` for sigmoid/probabilities, ``C - 1`` (or ``C``) for
        softmax, ``num_classes - 1`` (or ``num_classes``) for labels.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if mode == "sigmoid":
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) for mode='sigmoid', got {threshold}")
        return torch.sigmoid(x.float()) > threshold
    if mode == "probabilities":
        return x > threshold
    if mode == "softmax":
        if x.dim() < 3 or x.shape[1] < 2:
            raise ValueError(f"mode='softmax' needs x of shape (B, C>=2, *spatial), got {tuple(x.shape)}")
        labels, num_classes = x.argmax(1), x.shape[1]
    elif mode == "labels":
        if num_classes is None or num_classes < 2:
            raise ValueError(f"mode='labels' needs num_classes >= 2 (including background), got {num_classes}")
        if x.dim() >= 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() not in (3, 4):
            raise ValueError(f"label map must have shape (B, H, W) or (B, D, H, W), got {tuple(x.shape)}")
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError("label map must hold integer class indices, got non-integer values")
        labels = x.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"label values must be in [0, {num_classes - 1}], got range [{int(labels.min())}, {int(labels.max())}]"
            )
    else:
        raise ValueError(f"mode must be 'sigmoid', 'softmax', 'labels' or 'probabilities', got {mode!r}")
    onehot = F.one_hot(labels, num_classes).movedim(-1, 1).bool()
    return onehot if include_background else onehot[:, 1:]


def _overlap_score(pred: object, target: object, ignore_empty: bool, jaccard: bool) -> torch.Tensor:
    """Dice (or IoU with ``jaccard``) per image and class, float32 ``(B, C)``; see :func:`dice`."""
    p, t = _check_pair(pred, target)
    dims = tuple(range(2, p.dim()))
    inter, sp, st = (p & t).sum(dims).double(), p.sum(dims).double(), t.sum(dims).double()
    num, den = (inter, sp + st - inter) if jaccard else (2 * inter, sp + st)
    out = torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(den))
    if ignore_empty:
        out = torch.where(st > 0, out, torch.full_like(out, float("nan")))
    return out.float()


def dice(pred: torch.Tensor, target: torch.Tensor, ignore_empty: bool = False) -> torch.Tensor:
    """Dice coefficient ``2|P∩T| / (|P|+|T|)`` per image and class.

    Args:
        pred, target: binary masks ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        ignore_empty: nan wherever the target is empty (MONAI's ``DiceMetric`` default); otherwise
            1.0 when both are empty and 0.0 when only the target is.

    Returns:
        float32 ``(B, C)``.
    """
    return _overlap_score(pred, target, ignore_empty, jaccard=False)


def iou(pred: torch.Tensor, target: torch.Tensor, ignore_empty: bool = False) -> torch.Tensor:
    """Intersection over union (Jaccard) ``|P∩T| / |P∪T|`` per image and class.

    Args:
        pred, target: binary masks ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        ignore_empty: nan wherever the target is empty (MONAI's ``MeanIoU`` default); otherwise
            1.0 when both are empty and 0.0 when only the target is.

    Returns:
        float32 ``(B, C)``.
    """
    return _overlap_score(pred, target, ignore_empty, jaccard=True)


def _surface(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of bool masks ``(B, C, *spatial)``: foreground with a background face-neighbour."""
    padded = F.pad(mask.float(), (1, 1) * (mask.dim() - 2), value=0.0) > 0
    interior = mask.clone()
    for axis in range(2, mask.dim()):
        for offset in (0, 2):
            sl = [slice(None)] * 2 + [slice(1, s + 1) for s in mask.shape[2:]]
            sl[axis] = slice(offset, offset + mask.shape[axis])
            interior &= padded[tuple(sl)]
    return mask & ~interior


def _spacing_table(spacing: SpacingLike, batch: int, nd: int) -> torch.Tensor:
    """Per-image spacing ``(B, nd)`` float64 from None / number / (nd,) / (B, nd)."""
    if spacing is None:
        return torch.ones(batch, nd, dtype=torch.float64)
    expected = f"None, a number, a sequence of {nd} numbers or a (B, {nd}) tensor of pixel sizes in mm"
    if isinstance(spacing, (bool, str, bytes)) or (isinstance(spacing, torch.Tensor) and spacing.dtype == torch.bool):
        raise TypeError(f"spacing must be {expected}, got {type(spacing).__name__} {spacing!r}")
    try:
        sp = torch.as_tensor(spacing, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"spacing must be {expected}, got {type(spacing).__name__} {spacing!r} ({e})") from None
    if sp.dim() == 0:
        sp = sp.expand(nd)
    if sp.dim() == 1:
        if sp.shape[0] != nd:
            raise ValueError(f"spacing must have {nd} values (one per spatial axis), got {tuple(sp.shape)}")
        sp = sp.unsqueeze(0).expand(batch, nd)
    elif sp.dim() == 2:
        if sp.shape != (batch, nd):
            raise ValueError(f"per-image spacing must have shape (B, {nd}) = ({batch}, {nd}), got {tuple(sp.shape)}")
    else:
        raise ValueError(f"spacing must be a number, ({nd},) or (B, {nd}), got shape {tuple(sp.shape)}")
    if not bool(torch.isfinite(sp).all()) or bool((sp <= 0).any()):
        raise ValueError(f"spacing must be finite and > 0, got {sp.tolist()}")
    return sp


def _nearest_distances(src: torch.Tensor, dst: torch.Tensor, chunk_elems: int = 1 << 22) -> torch.Tensor:
    """For each row of ``src (N, d)`` the distance to the nearest row of ``dst (M, d)``, in chunks; N, M > 0."""
    rows = max(1, chunk_elems // dst.shape[0])
    out = [torch.cdist(src[i : i + rows], dst).min(dim=1).values for i in range(0, src.shape[0], rows)]
    return torch.cat(out)


def surface_distances(
    pred: torch.Tensor, target: torch.Tensor, spacing: SpacingLike = None
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The two directed surface-distance sets for every image and class.

    Args:
        pred, target: binary masks ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        spacing: pixel size per spatial axis in mm: None (1), a number, ``(nd,)`` or ``(B, nd)``.

    Returns:
        ``out[b][c] = (d(P->T), d(T->P))``, float64 1-D tensors of lengths ``|surface(P)|`` and
        ``|surface(T)|``. A set is empty when its source mask is empty, and all ``inf`` when its
        source is non-empty but the other mask is empty.
    """
    p, t = _check_pair(pred, target)
    b, c = p.shape[:2]
    nd = p.dim() - 2
    sp = _spacing_table(spacing, b, nd)
    edges_p, edges_t = _surface(p), _surface(t)
    out: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for i in range(b):
        row = []
        scale = sp[i].to(p.device)
        for k in range(c):
            cp = torch.nonzero(edges_p[i, k]).double() * scale
            ct = torch.nonzero(edges_t[i, k]).double() * scale
            if cp.shape[0] and ct.shape[0]:
                row.append((_nearest_distances(cp, ct), _nearest_distances(ct, cp)))
            else:
                inf = float("inf")
                row.append((cp.new_full((cp.shape[0],), inf), ct.new_full((ct.shape[0],), inf)))
        out.append(row)
    return out


def hausdorff_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    percentile: Optional[float] = None,
    spacing: SpacingLike = None,
) -> torch.Tensor:
    """Symmetric Hausdorff distance between the surfaces of ``pred`` and ``target`` (or its
    ``percentile`` variant), defined in the module docstring, as MONAI's ``HausdorffDistanceMetric``.

    Args:
        pred, target: binary masks ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        percentile: None for the maximum, else a number in ``[0, 100]``.
        spacing: pixel size per spatial axis (mm): None (1), a number, ``(nd,)`` or ``(B, nd)``,
            in the order of the tensor axes (row, col) / (depth, row, col).

    Returns:
        float32 ``(B, C)``; nan where both masks are empty, inf where exactly one is.
    """
    if percentile is not None and not (0.0 <= float(percentile) <= 100.0):
        raise ValueError(f"percentile must be None or in [0, 100], got {percentile}")
    if percentile is None:
        return _per_case(pred, target, spacing, lambda a, b: torch.maximum(a.max(), b.max()))
    q = float(percentile) / 100.0
    return _per_case(pred, target, spacing, lambda a, b: torch.maximum(torch.quantile(a, q), torch.quantile(b, q)))


def _per_case(
    pred: torch.Tensor, target: torch.Tensor, spacing: SpacingLike, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``fn(d(P->T), d(T->P))`` per image and class, float32 ``(B, C)``: nan where both masks are
    empty, inf where exactly one is."""
    out = torch.empty(*pred.shape[:2], dtype=torch.float64)  # (B, C) also for B = 0, like dice
    for i, row in enumerate(surface_distances(pred, target, spacing)):
        for k, (d_pt, d_tp) in enumerate(row):
            if d_pt.numel() == 0 or d_tp.numel() == 0:
                out[i, k] = float("nan") if d_pt.numel() == d_tp.numel() else float("inf")
            else:
                out[i, k] = fn(d_pt, d_tp).cpu()
    return out.float().to(pred.device)


def hd95(pred: torch.Tensor, target: torch.Tensor, spacing: SpacingLike = None) -> torch.Tensor:
    """95th-percentile Hausdorff distance: :func:`hausdorff_distance` with ``percentile=95``.

    ``pred, target: (B, C, H, W)`` or ``(B, C, D, H, W)`` -> float32 ``(B, C)`` (nan where both
    masks are empty, inf where exactly one is); ``spacing`` as for :func:`hausdorff_distance`.
    """
    return hausdorff_distance(pred, target, percentile=95, spacing=spacing)


def average_surface_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: SpacingLike = None,
    symmetric: bool = True,
) -> torch.Tensor:
    """Average surface distance (module docstring): symmetric by default, otherwise ``mean d(P->T)``.

    Args:
        pred, target: binary masks ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        spacing: pixel size per spatial axis (mm), see :func:`hausdorff_distance`.
        symmetric: pool both directions (True) or only prediction -> target.

    Returns:
        float32 ``(B, C)``; nan where both masks are empty, inf where exactly one is.
    """
    return _per_case(pred, target, spacing, lambda a, b: (torch.cat([a, b]) if symmetric else a).mean())
