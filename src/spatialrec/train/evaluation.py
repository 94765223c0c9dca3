"""Testing a trained model on a data set of images or volumes: :func:`evaluate`.

Its result has the format of :mod:`spatialrec.summary`, the same as
:func:`spatialrec.inference.evaluate_volumes` (sliding windows), so a 2D and a 3D model can be
compared key for key.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import summary as S
from . import distributed as D
from .config import LossFn, check_dataset, check_positive, resolve_amp_dtype
from .steps import forward, make_loader, progress_bar


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 8,
    device: "str | torch.device" = "auto",
    threshold: float = 0.5,
    loss_fn: Optional[LossFn] = None,
    amp: bool = False,
    amp_dtype: "Optional[Union[str, torch.dtype]]" = None,
    hd95: bool = True,
    class_names: Optional[Sequence[str]] = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Test a segmentation model: per-case Dice, IoU and HD95, and their summary per class.

    The prediction is ``sigmoid(model(image)) > threshold`` per class; each item is a case (an
    image, or a volume for 3D models). Means and stds are taken over the cases where a metric is
    finite, nan/inf HD95 values are counted (see :mod:`spatialrec.summary`); HD95 is in
    millimetres when items carry ``"spacing"``, else in pixels. Under ``torchrun`` every process
    tests its share and the results are gathered, so every process returns the same, complete
    result.

    Args:
        model: maps ``image: (B, C, H, W)`` to logits ``(B, K, H, W)`` (or ``(B, C, D, H, W)``
            to ``(B, K, D, H, W)``).
        data: Dataset of dicts ``{"image": (C, H, W), "mask": (K, H, W), "id": str}`` or the
            same with ``(C, D, H, W)`` / ``(K, D, H, W)`` volumes; optional ``"spacing"``.
        batch_size: cases per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        threshold: on the sigmoid probability.
        loss_fn: when given, also the mean loss ``loss_fn(logits, mask)`` over cases.
        amp, amp_dtype: run the model under autocast (see :func:`~spatialrec.train.fit`).
        hd95: compute HD95 (the slowest metric; skip it for quick checks).
        class_names: ``K`` names for the per-class entries (default ``"class_0"``, ...).
        num_workers: DataLoader workers.
        progress: show a tqdm bar (needs ``spatialrec[data]``).

    Returns:
        The summary of :func:`spatialrec.summary.summarise` (format in :mod:`spatialrec.summary`),
        with ``"loss"`` when ``loss_fn`` is given.
    """
    data = check_dataset("data", data)
    check_positive("batch_size", batch_size)
    kind = S.case_kind(data[0]["mask"].dim() - 1)  # type: ignore[index]
    ctx = D.setup(device)
    dev = ctx.device
    dtype = resolve_amp_dtype(amp, amp_dtype, dev)
    net = D.unwrap(model)
    was_training = net.training
    net.to(dev).eval()
    sampler = D.ShardedEpochSampler(len(data), shuffle=False, rank=ctx.rank, world_size=ctx.world_size, pad=False)  # type: ignore[arg-type]
    loader = make_loader(data, sampler, batch_size, num_workers, dev, drop_last=False)
    indices = iter(sampler)
    bar = progress_bar(progress and ctx.is_main, len(loader), "test")
    rows: list[tuple[int, dict[str, Any]]] = []
    loss_sum, with_spacing = 0.0, 0
    try:
        for batch in loader:
            logits, mask = forward(net, batch, dev, dtype)
            n = mask.shape[0]
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, mask)) * n
            values = S.case_metrics(
                (torch.sigmoid(logits) > threshold).cpu(), (mask > 0.5).cpu(), spacing=batch.get("spacing"), hd95=hd95
            )
            with_spacing += n if batch.get("spacing") is not None else 0
            idx = [next(indices) for _ in range(n)]
            ids = batch.get("id", [None] * n)
            names = [str(i) if case_id is None else case_id for i, case_id in zip(idx, ids)]
            rows.extend(zip(idx, S.case_rows(names, values)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        net.train(was_training)
    gathered = D.all_gather_objects((rows, loss_sum, with_spacing), ctx)
    per_case = [row for _, row in sorted((r for part, _, _ in gathered for r in part), key=lambda t: t[0])]
    loss = sum(g[1] for g in gathered) / len(per_case) if loss_fn is not None else None
    unit = S.hd95_unit(sum(g[2] for g in gathered), len(per_case))
    return S.summarise(per_case, case_kind=kind, class_names=class_names, loss=loss, hd95_unit=unit)


__all__ = ["evaluate"]
