"""One summary format for segmentation results, shared by 2D and 3D evaluation.

:func:`spatialrec.train.evaluate` (images or whole volumes, one forward pass each) and
:func:`spatialrec.inference.evaluate_volumes` (sliding windows or one forward pass) both build
their result here, so a 2D slice model and a 3D volume model tested on the same data give
results with the same keys, computed the same way, that can be compared line by line.

A *case* is what the metrics are computed on: one image ``(K, H, W)`` or one volume
``(K, D, H, W)``. For every case and class :func:`case_metrics` computes Dice, IoU and HD95 with
:mod:`spatialrec.metrics` (HD95 in mm when the case has a spacing, else in pixels/voxels);
:func:`summarise` turns the per-case rows into::

    {
      "format": "spatialrec.summary/1",
      "case_kind": "image" | "volume",
      "num_cases": N,
      "class_names": [K names],
      "dice": S, "iou": S, "hd95": S,      # "hd95" only when computed
      "hd95_unit": "mm" | "px" | "mixed",  # with "hd95": mm when every case had a spacing
      "loss": float,                       # only when a loss function was given
      "per_case": [{"id": str, "dice": [K], "iou": [K], "hd95": [K]}, ...],   # in data-set order
    }

where each metric summary ``S`` is::

    {
      "mean": float | None,                # mean over classes of "per_class"
      "std": float | None,                 # std over cases of the case's mean over classes
      "per_class": {name: float | None},   # mean over the cases where the value is finite
      "per_class_std": {name: float | None},
      "per_class_count": {name: int},      # cases that entered the class mean
      "infinite": int,                     # (case, class) values that are inf
      "per_class_infinite": {name: int},
      "undefined": int,                    # (case, class) values that are nan
      "per_class_undefined": {name: int},
    }

HD95 is ``inf`` when exactly one of prediction and ground truth is empty (a structure missed or
hallucinated) and ``nan`` when both are (nothing to measure); such values are left out of the
means and counted instead, because one ``inf`` would make a mean meaningless and leaving them out
silently would flatter a model that misses structures. Read ``"infinite"`` next to the mean.
Standard deviations are population ones (``ddof=0``) over the finite values; the overall
``"std"`` is taken over the cases whose every class is finite (for one class it equals that
class's std). A mean or std with no finite value behind it is ``None``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from . import metrics as M

SUMMARY_FORMAT = "spatialrec.summary/1"
"""Value of the ``"format"`` key of every summary built by :func:`summarise`."""

METRICS: tuple[str, ...] = ("dice", "iou", "hd95")
"""The per-case metrics, in the order they appear in a summary."""

CASE_KINDS: tuple[str, ...] = ("image", "volume")

HD95_UNITS: tuple[str, ...] = ("mm", "px", "mixed")
"""``"mm"``: every case had a spacing; ``"px"``: none had (pixels or voxels); ``"mixed"``: some had."""

SpacingArg = Union[None, Sequence[float], torch.Tensor]


def case_kind(spatial_dims: int) -> str:
    """``"image"`` for 2 spatial dims, ``"volume"`` for 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims}")
    return CASE_KINDS[spatial_dims - 2]


def case_metrics(
    pred: torch.Tensor, target: torch.Tensor, *, spacing: SpacingArg = None, hd95: bool = True
) -> dict[str, torch.Tensor]:
    """Dice, IoU and (optionally) HD95 of every case and class.

    Args:
        pred, target: binary masks ``(B, K, H, W)`` or ``(B, K, D, H, W)`` (bool or 0/1).
        spacing: pixel size in mm per spatial axis, ``(nd,)`` for all cases or ``(B, nd)`` one
            row per case; ``None`` measures HD95 in pixels/voxels.
        hd95: compute HD95 (the slow one).

    Returns:
        ``{"dice": (B, K), "iou": (B, K)[, "hd95": (B, K)]}`` float64 on the CPU.

    Example:
        >>> p = torch.zeros(1, 1, 8, 8, dtype=torch.bool); p[..., 2:5, 2:5] = True
        >>> {k: v.shape for k, v in case_metrics(p, p).items()}
        {'dice': torch.Size([1, 1]), 'iou': torch.Size([1, 1]), 'hd95': torch.Size([1, 1])}
    """
    out = {"dice": M.dice(pred, target).double().cpu(), "iou": M.iou(pred, target).double().cpu()}
    if hd95:
        sp = None
        if spacing is not None:
            sp = torch.as_tensor(spacing, dtype=torch.float64).detach().cpu()
            if sp.dim() == 2 or sp.numel() == pred.shape[0] * (pred.dim() - 2):
                sp = sp.reshape(pred.shape[0], -1)  # one row per case (a batch may mix scans)
        out["hd95"] = M.hd95(pred, target, spacing=sp).double().cpu()
    return out


def case_rows(ids: Sequence[Any], values: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Per-case rows ``{"id": str, "dice": [K], ...}`` from :func:`case_metrics`'s tables.

    Args:
        ids: one id per case (``str()`` is applied).
        values: ``{metric: (B, K)}``.
    """
    n = len(ids)
    for name, table in values.items():
        if table.dim() != 2 or table.shape[0] != n:
            raise ValueError(f"values[{name!r}] must be (B, K) with B = len(ids) = {n}, got {tuple(table.shape)}")
    return [{"id": str(ids[b]), **{name: [float(v) for v in table[b]] for name, table in values.items()}} for b in range(n)]


def _std(x: torch.Tensor) -> Optional[float]:
    return float(x.std(correction=0)) if x.numel() else None


def metric_summary(values: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Statistics of one metric over cases: see the module docstring for the keys.

    Args:
        values: ``(N, K)`` one value per case and class; nan and inf are counted, not averaged.
        class_names: ``K`` names.

    Example:
        >>> s = metric_summary(torch.tensor([[1.0], [3.0], [float("inf")]]), ["liver"])
        >>> s["mean"], s["std"], s["infinite"], s["per_class_count"]
        (2.0, 1.0, 1, {'liver': 2})
    """
    if values.dim() != 2 or values.shape[1] != len(class_names):
        raise ValueError(f"values must be (N, K={len(class_names)}), got {tuple(values.shape)}")
    values = values.double()
    finite = torch.isfinite(values)
    cols = [values[finite[:, k], k] for k in range(values.shape[1])]
    means = [float(c.mean()) if c.numel() else None for c in cols]
    defined = [m for m in means if m is not None]
    whole = finite.all(dim=1)
    names = list(class_names)
    return {
        "mean": math.fsum(defined) / len(defined) if defined else None,
        "std": _std(values[whole].mean(dim=1)),
        "per_class": dict(zip(names, means)),
        "per_class_std": dict(zip(names, (_std(c) for c in cols))),
        "per_class_count": dict(zip(names, (int(c.numel()) for c in cols))),
        "infinite": int(torch.isinf(values).sum()),
        "per_class_infinite": dict(zip(names, (int(v) for v in torch.isinf(values).sum(dim=0)))),
        "undefined": int(torch.isnan(values).sum()),
        "per_class_undefined": dict(zip(names, (int(v) for v in torch.isnan(values).sum(dim=0)))),
    }


def summarise(
    rows: Sequence[Mapping[str, Any]],
    *,
    case_kind: str,
    class_names: Optional[Sequence[str]] = None,
    loss: Optional[float] = None,
    hd95_unit: Optional[str] = None,
) -> dict[str, Any]:
    """The summary of per-case rows (see the module docstring for the format).

    Args:
        rows: ``[{"id": str, "dice": [K], "iou": [K], "hd95": [K]}, ...]`` in data-set order
            (:func:`case_rows`); every row has the same metrics. Non-finite values may be
            ``float`` nan/inf or ``None`` (read back from JSON: counted as undefined).
        case_kind: ``"image"`` or ``"volume"``.
        class_names: ``K`` names (default ``"class_0"``, ...).
        loss: the mean loss over cases, stored as ``"loss"`` when given.
        hd95_unit: ``"mm"``, ``"px"`` or ``"mixed"`` (see :func:`hd95_unit`), stored with HD95.

    Raises:
        ValueError: no rows, rows without an id or with differing metrics or class counts, a
            wrong number of class names, an unknown ``case_kind``.
    """
    if case_kind not in CASE_KINDS:
        raise ValueError(f"case_kind must be one of {CASE_KINDS}, got {case_kind!r}")
    if len(rows) == 0:
        raise ValueError("rows is empty: there is nothing to summarise")
    if hd95_unit is not None and hd95_unit not in HD95_UNITS:
        raise ValueError(f"hd95_unit must be one of {HD95_UNITS}, got {hd95_unit!r}")
    present = [m for m in METRICS if m in rows[0]]
    if "dice" not in present:
        raise ValueError(f"rows need at least 'dice' (and 'iou', 'hd95'), got keys {sorted(rows[0])}")
    k = len(rows[0]["dice"])
    for i, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"rows[{i}] has no 'id'; every case needs one")
        got = [m for m in METRICS if m in row]
        if got != present or any(len(row[m]) != k for m in present):
            raise ValueError(f"rows[{i}] ({row['id']!r}) has metrics {got} with other class counts than rows[0] {present} x {k}")
    names = list(class_names) if class_names is not None else [f"class_{j}" for j in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but the masks have {k} classes")
    result: dict[str, Any] = {"format": SUMMARY_FORMAT, "case_kind": case_kind, "num_cases": len(rows), "class_names": names}
    for metric in present:
        table = torch.tensor(
            [[math.nan if v is None else float(v) for v in row[metric]] for row in rows], dtype=torch.float64
        )
        result[metric] = metric_summary(table, names)
    if "hd95" in present and hd95_unit is not None:
        result["hd95_unit"] = hd95_unit
    if loss is not None:
        result["loss"] = float(loss)
    result["per_case"] = [dict(row, id=str(row["id"])) for row in rows]
    return result


def hd95_unit(with_spacing: int, cases: int) -> str:
    """The unit of HD95 when ``with_spacing`` of ``cases`` cases had a spacing."""
    return "mm" if with_spacing == cases else "px" if with_spacing == 0 else "mixed"


def json_safe(obj: Any) -> Any:
    """``obj`` with nan/inf floats as ``None`` and tensors/NumPy scalars as numbers, for valid JSON."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    elif hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        obj = obj.item()  # a NumPy scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _cell(mean: Optional[float], std: Optional[float], digits: int) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a summary: one row per class and a mean row, ``mean ± std`` cells.

    The HD95 column (headed with its unit) is followed by how many cases of the class had an
    infinite HD95 (``k/N``). Returns the text; printing it is the caller's choice.
    """
    names = list(summary["class_names"])
    n = int(summary["num_cases"])
    cols = [m for m in METRICS if m in summary]
    heads = {"dice": "Dice", "iou": "IoU", "hd95": f"HD95 {summary.get('hd95_unit', '')}".strip()}
    digits = {"dice": 4, "iou": 4, "hd95": 2}
    width = max(14, max(len(x) for x in names + ["mean"]) + 2)
    lines = [f"{'class':<{width}}" + "".join(f"{heads[m]:>20}" for m in cols) + ("   HD95 inf" if "hd95" in cols else "")]
    for name in [*names, "mean"]:
        cells = []
        for m in cols:
            s = summary[m]
            mean, std = (s["mean"], s["std"]) if name == "mean" else (s["per_class"][name], s["per_class_std"][name])
            cells.append(f"{_cell(mean, std, digits[m]):>20}")
        line = f"{name:<{width}}" + "".join(cells)
        if "hd95" in cols:
            inf = summary["hd95"]["infinite"] if name == "mean" else summary["hd95"]["per_class_infinite"][name]
            total = n * len(names) if name == "mean" else n
            line += f"{f'{inf}/{total}':>11}"
        lines.append(line)
    return "\n".join(lines)


__all__ = [
    "CASE_KINDS",
    "METRICS",
    "HD95_UNITS",
    "SUMMARY_FORMAT",
    "case_kind",
    "case_metrics",
    "case_rows",
    "format_table",
    "hd95_unit",
    "json_safe",
    "metric_summary",
    "summarise",
]
