"""The settings of a :func:`~spatialrec.train.fit` run, checked in one place.

:class:`FitConfig` holds every argument of ``fit`` except the model and the data sets;
:meth:`FitConfig.from_arguments` checks them all before anything is built or written, so that a
typo fails in the first second with an error that names the argument, the value and what is
expected. The data-set checks (:func:`check_dataset`) and the mixed-precision dtype
(:func:`resolve_amp_dtype`) are shared with :func:`~spatialrec.train.evaluate`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from ..checks import check_bool, check_float, check_int
from ..losses import DiceLoss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "plateau")


def check_dataset(name: str, data: object) -> Dataset:
    """``data`` if it is a non-empty map-style Dataset of ``{"image", "mask", ...}`` dicts.

    Images ``(C, H, W)`` with masks ``(K, H, W)``, or volumes ``(C, D, H, W)`` with masks
    ``(K, D, H, W)`` (3D models, e.g. :mod:`spatialrec.data.patches3d`). Only item 0 is read.
    """
    if isinstance(data, DataLoader):
        raise TypeError(
            f"{name} must be a Dataset (items {{'image', 'mask', 'id'}}), got a DataLoader; fit builds "
            "its own loaders so that the data order and the split over processes are reproducible"
        )
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"{name} must be a map-style Dataset with __getitem__ and __len__, got {type(data).__name__}")
    n = len(data)  # type: ignore[arg-type]
    if n < 1:
        raise ValueError(f"{name} is empty; it needs at least one sample")
    item = data[0]  # type: ignore[index]
    if not isinstance(item, dict) or "image" not in item or "mask" not in item:
        got = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise TypeError(f"{name}[0] must be a dict with 'image' (C, H, W) and 'mask' (K, H, W) tensors, got {got}")
    for key in ("image", "mask"):
        t = item[key]
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            layout = "(C, H, W) or (C, D, H, W)" if key == "image" else "(K, H, W) or (K, D, H, W)"
            raise ValueError(f"{name}[0][{key!r}] must be a tensor of shape {layout}, got {shape}")
    if item["image"].dim() != item["mask"].dim():
        raise ValueError(
            f"{name}[0]: 'image' {tuple(item['image'].shape)} and 'mask' {tuple(item['mask'].shape)} must have "
            "the same number of dims (both 2D images or both 3D volumes)"
        )
    return data  # type: ignore[return-value]


def check_positive(name: str, value: object, kind: type = int, allow_none: bool = False) -> Any:
    """``value`` as an int (``kind=int``, Python or NumPy integers) or float (``kind=float``) if it
    is positive, or ``None`` when allowed.

    Plain Python numbers are returned so that they can be stored in a checkpoint, which loads
    with ``weights_only=True`` (NumPy scalars would not load).
    """
    if value is None and allow_none:
        return None
    number = check_float(name, value, -math.inf) if kind is float else check_int(name, value, None)
    if not number > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return number


_AMP_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_amp_dtype(amp: bool, amp_dtype: "Optional[Union[str, torch.dtype]]", device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` when mixed precision is off.

    Default: bfloat16 on CPU; on CUDA bfloat16 where the GPU supports it, else float16.
    """
    if not check_bool("amp", amp):
        return None
    if amp_dtype is None:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if isinstance(amp_dtype, str):
        key = amp_dtype.strip().lower()
        if key not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype={amp_dtype!r} is not supported; expected 'bf16' or 'fp16'")
        return _AMP_DTYPES[key]
    if amp_dtype in (torch.bfloat16, torch.float16):
        return amp_dtype
    raise ValueError(f"amp_dtype={amp_dtype!r} is not supported; expected torch.bfloat16 or torch.float16")


def default_loss() -> LossFn:
    """The paper's loss: sigmoid soft Dice per channel, from :mod:`spatialrec.losses`."""
    return DiceLoss()


@dataclass(frozen=True)
class FitConfig:
    """Every setting of :func:`~spatialrec.train.fit` but the model and the data, checked.

    The fields are ``fit``'s keyword arguments, with the same names and meanings (see its
    docstring); after :meth:`from_arguments`, ``loss_fn`` is set (the default loss when none
    was given), ``eval_batch_size`` is a number and ``out_dir`` a :class:`~pathlib.Path` or
    ``None``.
    """

    loss_fn: LossFn
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: Optional[float] = None
    lr_schedule: str = "constant"
    patience: Optional[int] = 30
    min_delta: float = 0.0
    grad_clip: Optional[float] = None
    amp: bool = False
    amp_dtype: "Optional[Union[str, torch.dtype]]" = None
    device: "str | torch.device" = "auto"
    seed: int = 0
    out_dir: Optional[Path] = None
    resume: "Union[bool, PathLike]" = False
    overwrite: bool = False
    threshold: float = 0.5
    time_budget: Optional[float] = None
    num_workers: int = 0
    drop_last: bool = False
    eval_batch_size: int = 8
    hd95: bool = True
    class_names: Optional[Sequence[str]] = None
    sync_batchnorm: bool = False
    restore_best: bool = True
    progress: bool = True
    on_epoch_end: Optional[Callable[[dict[str, float]], None]] = None
    run_info: Optional[dict[str, Any]] = None

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> "FitConfig":
        """Check ``fit``'s keyword arguments (every field of this class, or some of them: the others
        take their defaults) and build the config.

        Raises:
            TypeError, ValueError: an argument of the wrong type or out of range; the message
                names it, the value and what is expected. A ``TypeError`` also for a name that
                is not a setting.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown = sorted(set(arguments) - set(defaults))
        if unknown:
            raise TypeError(f"unknown fit settings {unknown}; expected some of {sorted(defaults)}")
        kw = dict(arguments)
        a = {**defaults, **kw, "eval_batch_size": kw.get("eval_batch_size")}  # what is checked
        for name, kind, allow_none in (
            ("epochs", int, False), ("batch_size", int, False), ("lr", float, False), ("patience", int, True),
            ("grad_clip", float, True), ("time_budget", float, True), ("eval_batch_size", int, True),
        ):  # fmt: skip
            a[name] = check_positive(name, a[name], kind, allow_none)
        a["threshold"] = check_float("threshold", a["threshold"], 0.0, 1.0, low_open=True, high_open=True)
        a["seed"] = check_int("seed", a["seed"], minimum=0)
        kw.update({k: a[k] for k in ("epochs", "batch_size", "lr", "patience", "grad_clip", "time_budget", "threshold", "seed") if k in kw})
        kw["eval_batch_size"] = a["eval_batch_size"] or a["batch_size"]
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
            if not isinstance(a[name], str):
                raise TypeError(f"{name} must be a string, one of {allowed}, got {type(a[name]).__name__} {a[name]!r}")
            if a[name].lower() not in allowed:
                raise ValueError(f"{name}={a[name]!r} is not supported; expected one of {allowed}")
        resume, out_dir = a["resume"], a["out_dir"]
        if resume is not False and resume is not None and out_dir is None and not isinstance(resume, (str, os.PathLike)):
            raise ValueError("resume=True needs out_dir (it continues from out_dir/last.pt)")
        kw["out_dir"] = Path(out_dir) if out_dir is not None else None
        if kw.get("loss_fn") is None:
            kw["loss_fn"] = default_loss()
        return cls(**kw)

    def recorded(self, world_size: int, amp_dtype: Optional[torch.dtype]) -> dict[str, Any]:
        """The settings stored in every checkpoint and compared when a run is resumed."""
        return {
            "seed": self.seed, "batch_size": self.batch_size, "world_size": world_size, "lr": float(self.lr),
            "optimizer": self.optimizer, "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule,
            "patience": self.patience, "min_delta": self.min_delta, "grad_clip": self.grad_clip,
            "amp_dtype": str(amp_dtype) if amp_dtype is not None else None, "epochs": self.epochs,
            "drop_last": self.drop_last,
        }  # fmt: skip


__all__ = [
    "FitConfig",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "check_dataset",
    "check_positive",
    "default_loss",
    "resolve_amp_dtype",
]
