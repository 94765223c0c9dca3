"""Random patch sampling from whole volumes, for patch-based 3D training.

:class:`RandomPatchDataset3d` wraps any sequence of volume items
``{"image": (C, D, H, W), "mask": (K, D, H, W), "id": str, ["spacing": (3,)]}`` and yields
``samples_per_volume`` random patches per volume per epoch, a configurable fraction of them
centred on a random foreground voxel (foreground oversampling: small organs are otherwise
almost never seen). Deterministic given ``seed`` and the epoch (:meth:`set_epoch`).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..checks import check_float, check_int

SizeArg3 = Union[int, Sequence[int]]


def _as_size3(name: str, value: SizeArg3) -> tuple[int, int, int]:
    """``value`` (an int, or three ints ``(d, h, w)``, each >= 1; NumPy integers too) as three ints.

    Raises:
        TypeError: not an int nor a sequence, or an entry that is not an int.
        ValueError: not three entries, or an entry < 1.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Integral, Sequence)):
        raise TypeError(f"{name} must be an int or three ints (d, h, w), got {type(value).__name__} {value!r}")
    sizes = (value,) * 3 if isinstance(value, numbers.Integral) else tuple(value)
    if len(sizes) != 3:
        raise ValueError(f"{name} must be a positive int or three positive ints (d, h, w), got {value!r}")
    d, h, w = (check_int(name, s, minimum=1) for s in sizes)
    return d, h, w


def _as_tensor(name: str, item_id: str, value: Any) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 4:
        raise ValueError(f"volume {item_id!r}: {name} must have shape (C, D, H, W), got shape {tuple(t.shape)}")
    return t


class RandomPatchDataset3d(Dataset):
    """Random ``patch_size`` patches of whole volumes, with foreground oversampling.

    Args:
        volumes: a sequence (e.g. a ``Dataset``) of dicts with ``"image"`` ``(C, D, H, W)``,
            ``"mask"`` ``(K, D, H, W)`` (0/1), ``"id"`` and optionally ``"spacing"`` ``(3,)``.
        patch_size: ``(d, h, w)`` or an int. A volume smaller than the patch along an axis is
            zero-padded (``pad_value`` for the image) up to the patch, centred.
        samples_per_volume: patches drawn from each volume per epoch (``len = volumes * this``).
        foreground_ratio: probability that a patch is centred on a random voxel where any mask
            channel is 1 (the remaining patches are uniform over the volume); volumes without
            foreground always get uniform patches.
        seed: base seed; the patch of index ``i`` in epoch ``e`` depends only on ``(seed, e, i)``.
        cache_size: volumes kept in memory (least recently used first out). Items for one
            volume are consecutive indices, so a sequential or per-volume sampler loads every
            volume once per epoch even with ``cache_size=1``.
        pad_value: image value used where a small volume is padded.

    Items: ``{"image": float32 (C, d, h, w), "mask": float32 (K, d, h, w), "id":
    "<volume id>@<z>,<y>,<x>" (the patch origin), "origin": int64 (3,), ["spacing": float32 (3,)]}``.

    Example:
        >>> vols = [{"image": torch.randn(1, 20, 24, 24), "mask": torch.zeros(1, 20, 24, 24), "id": "a"}]
        >>> ds = RandomPatchDataset3d(vols, patch_size=16, samples_per_volume=4)
        >>> ds[0]["image"].shape, len(ds)
        (torch.Size([1, 16, 16, 16]), 4)
    """

    def __init__(
        self,
        volumes: Sequence[Mapping[str, Any]],
        patch_size: SizeArg3,
        samples_per_volume: int = 4,
        foreground_ratio: float = 0.5,
        seed: int = 0,
        cache_size: int = 1,
        pad_value: float = 0.0,
    ) -> None:
        if not hasattr(volumes, "__len__") or not hasattr(volumes, "__getitem__"):
            raise TypeError(f"volumes must be a sequence or Dataset of volume dicts, got {type(volumes).__name__}")
        if len(volumes) == 0:
            raise ValueError("volumes is empty: there is nothing to sample patches from")
        self.volumes = volumes
        self.patch_size = _as_size3("patch_size", patch_size)
        self.samples_per_volume = check_int("samples_per_volume", samples_per_volume, minimum=1)
        self.cache_size = check_int("cache_size", cache_size, minimum=1)
        self.foreground_ratio = check_float("foreground_ratio", foreground_ratio, 0.0, 1.0)
        self.seed = check_int("seed", seed, minimum=0)
        self.pad_value = float(pad_value)
        self.epoch = 0
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        first = volumes[0]
        self.in_channels = int(getattr(volumes, "in_channels", _as_tensor("image", str(first.get("id")), first["image"]).shape[0]))
        self.num_classes = int(getattr(volumes, "num_classes", _as_tensor("mask", str(first.get("id")), first["mask"]).shape[0]))

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of patches: the patches of epoch ``e`` depend on ``(seed, e, index)``.

        Call it between epochs (e.g. from ``fit``'s ``on_epoch_end``). DataLoader workers copy the
        dataset when an epoch starts, so this reaches them unless ``persistent_workers=True``.
        """
        self.epoch = check_int("epoch", epoch, minimum=0)

    def _volume(self, v: int) -> dict[str, Any]:
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        item = self.volumes[v]
        vid = str(item.get("id", v))
        image = _as_tensor("image", vid, item["image"]).float()
        mask = _as_tensor("mask", vid, item["mask"]).float()
        if image.shape[1:] != mask.shape[1:]:
            raise ValueError(
                f"volume {vid!r}: image spatial shape {tuple(image.shape[1:])} differs from mask {tuple(mask.shape[1:])}"
            )
        pads = [max(0, p - s) for p, s in zip(self.patch_size, image.shape[1:])]
        if any(pads):
            flat = [q for p in reversed(pads) for q in (p // 2, p - p // 2)]  # F.pad wants the last axis first
            image = F.pad(image, flat, value=self.pad_value)
            mask = F.pad(mask, flat, value=0.0)
        # Foreground voxel coordinates, found once per loaded volume.
        fg = torch.nonzero(mask.amax(dim=0) > 0.5)
        entry = {"id": vid, "image": image, "mask": mask, "fg": fg, "spacing": item.get("spacing")}
        self._cache[v] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} patches")
        index %= len(self)
        vol = self._volume(index // self.samples_per_volume)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sizes = vol["image"].shape[1:]
        highs = [s - p for s, p in zip(sizes, self.patch_size)]  # last valid origin per axis
        fg = vol["fg"]
        if len(fg) and rng.random() < self.foreground_ratio:
            centre = fg[int(rng.integers(len(fg)))].tolist()
            origin = [min(max(c - p // 2, 0), h) for c, p, h in zip(centre, self.patch_size, highs)]
        else:
            origin = [int(rng.integers(h + 1)) for h in highs]
        sl = (slice(None),) + tuple(slice(o, o + p) for o, p in zip(origin, self.patch_size))
        out: dict[str, Any] = {
            "image": vol["image"][sl].contiguous(),
            "mask": vol["mask"][sl].contiguous(),
            "id": f"{vol['id']}@{origin[0]},{origin[1]},{origin[2]}",
            "origin": torch.tensor(origin, dtype=torch.int64),
        }
        if vol["spacing"] is not None:
            out["spacing"] = torch.as_tensor(vol["spacing"], dtype=torch.float32)
        return out


__all__ = ["RandomPatchDataset3d"]
