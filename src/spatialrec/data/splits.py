"""Group-wise train / validation / test splits and a helper that builds all three datasets.

A split assigns whole groups (patients, CT volumes, video sequences, or single images where the
data has no grouping) to one of ``"train"``, ``"val"``, ``"test"``, so no group is in two splits.
The groups are sorted, shuffled with ``numpy.random.default_rng(seed)``, and cut: the first
``n_test`` go to test, the next ``n_val`` to validation, the rest to training, with
``n_test = round(test_fraction * n)`` and ``n_val = round(val_fraction * n)``, each raised to 1
when its fraction is > 0 (a requested split is never silently empty). The result depends only on
the set of group names and the seed, not on the order the files were listed in.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..checks import check_choice
from ._io import DatasetError, check_fractions

__all__ = ["SPLITS", "assign_splits", "make_splits", "split_counts"]

SPLITS = ("train", "val", "test", "all")


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` for ``n`` groups (see the module docstring)."""
    check_fractions(val_fraction, test_fraction)
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DatasetError(
            f"{n} groups are too few for val_fraction={val_fraction} and test_fraction={test_fraction}: "
            f"{n_val} val + {n_test} test would leave {n_train} for training"
        )
    return n_train, n_val, n_test


def assign_splits(groups: Iterable[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Map each distinct group name to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        groups: group names (duplicates allowed).
        val_fraction, test_fraction: fractions of the groups in validation and test, in [0, 1).
        seed: integer seed of the shuffle.

    Returns:
        ``{group: split}``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    names = sorted(set(groups))
    if not names:
        raise DatasetError("no samples to split")
    _, n_val, n_test = split_counts(len(names), val_fraction, test_fraction)
    order = np.random.default_rng(int(seed)).permutation(len(names))
    out = {}
    for rank, i in enumerate(order):
        out[names[i]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS` (``TypeError`` for a non-string, ``ValueError`` for another name)."""
    return check_choice("split", split, SPLITS)


def make_splits(
    dataset_cls: Callable[..., Any],
    *args: Any,
    train_transform: Optional[Callable] = None,
    **kwargs: Any,
) -> tuple[Any, Any, Any]:
    """Build the train, validation and test datasets of one reader with the same arguments.

    Args:
        dataset_cls: a reader class, e.g. :class:`~spatialrec.data.DSB2018`.
        *args, **kwargs: its arguments (root, size, val_fraction, test_fraction, seed, ...), except
            ``split`` and ``transform``.
        train_transform: augmentation for the training set only; validation and test get none.

    Returns:
        ``(train, val, test)``.

    Example:
        >>> # skip: needs the DSB2018 data set in stage1_train/ (see docs/data.md)
        >>> from spatialrec.data import DSB2018, default_augmentation
        >>> train, val, test = make_splits(DSB2018, "stage1_train", train_transform=default_augmentation())
    """
    for bad in ("split", "transform"):
        if bad in kwargs:
            raise TypeError(f"make_splits sets {bad!r} itself; do not pass it")
    return (
        dataset_cls(*args, split="train", transform=train_transform, **kwargs),
        dataset_cls(*args, split="val", **kwargs),
        dataset_cls(*args, split="test", **kwargs),
    )
