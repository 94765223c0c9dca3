"""The shared base of every synthetic task: checked settings, the per-sample random stream, the
noise, and ``__getitem__``. Each task only says how to draw a layout (``layout(index)``) and how to
render it (``render(layout)``). Not public."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, TypedDict, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ...checks import check_float, check_int

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

#: The two kinds of task. "statistic": some global statistic of the image (the grey level of a far
#: cue, a count, the shape of the one bright object) decides the label, so a global pooling path can
#: solve it. "relational": a spatial relation decides it; some change that flips the labels leaves
#: the noiseless image histogram exactly as it was.
TASK_KINDS = ("statistic", "relational")


class TaskSettings(TypedDict, total=False):
    """The keyword settings every synthetic task takes besides ``num_samples`` and ``image_size``:

    - ``noise_std``: standard deviation of the Gaussian pixel noise (default 0.1);
    - ``split``: ``"train"`` (default), ``"val"`` or ``"test"``: an independent random stream each;
    - ``seed``: non-negative integer seed (default 0);
    - ``transform``: optional callable ``(image, mask) -> (image, mask)`` applied to each item.
    """

    noise_std: float
    split: str
    seed: int
    transform: Optional[Transform]


def _size_pair(image_size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise TypeError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        h = w = image_size
    else:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise TypeError(f"image_size must be an int or (H, W), got {image_size!r}") from None
    if h < 24 or w < 24:
        raise ValueError(f"image_size must be at least 24 x 24 (room for a cue and far-away objects), got {(h, w)}")
    return h, w


class _SyntheticTask(Dataset):
    """Base of every synthetic task. Not public.

    Subclasses set ``task_name`` (the id prefix), ``kind`` (one of :data:`TASK_KINDS`) and
    ``_task_code`` (an extra key of the random stream, so two tasks with the same seed never share
    one; ``None`` for the cue task, whose stream predates the others), and define ``layout(index)``
    and ``render(layout) -> (image float32 (H, W), mask bool (H, W))``.
    """

    in_channels = 1
    num_classes = 1
    task_name = ""
    kind = ""
    _task_code: Optional[int] = None

    def __init__(
        self,
        num_samples: int,
        image_size: Union[int, Sequence[int]],
        noise_std: float = 0.1,
        split: str = "train",
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.noise_std = check_float("noise_std", noise_std, 0.0)
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}")
        self.seed = check_int("seed", seed, 0)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (image, mask) -> (image, mask), got {type(transform).__name__}")
        self.image_size = _size_pair(image_size)
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        """The random stream of sample ``index``: ``default_rng([seed, split_code, index(, task_code)])``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        key = [self.seed, _SPLIT_CODES[self.split], index]
        if self._task_code is not None:
            key.append(self._task_code)
        return np.random.default_rng(key)

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.image_size
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
        return rows, cols

    def _finish(self, image: np.ndarray, noise_seed: int) -> np.ndarray:
        if self.noise_std > 0:
            image = image + np.random.default_rng(noise_seed).normal(0.0, self.noise_std, size=image.shape)
        return image.astype(np.float32)

    def layout(self, index: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, layout: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image_and_mask(self, layout: Any) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.render(layout)
        return image, mask

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.num_samples
        image, mask = self._image_and_mask(self.layout(index))
        img_t = torch.from_numpy(image)[None]
        mask_t = torch.from_numpy(mask.astype(np.float32))[None]
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        return {"image": img_t, "mask": mask_t, "id": f"{self.task_name}-{self.split}-{self.seed}-{index}"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, split={self.split!r}, seed={self.seed})"
