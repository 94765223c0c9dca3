"""Group-wise split assignment."""

from __future__ import annotations

import pytest

from spatialrec.data import DatasetError, assign_splits
from spatialrec.data.splits import split_counts


def test_counts_and_minimum_one():
    assert split_counts(10, 0.1, 0.2) == (7, 1, 2)
    assert split_counts(3, 0.1, 0.1) == (1, 1, 1)  # a requested split is never empty
    assert split_counts(5, 0.0, 0.0) == (5, 0, 0)
    with pytest.raises(DatasetError, match="too few"):
        split_counts(2, 0.1, 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        split_counts(10, 1.2, 0.1)
    with pytest.raises(ValueError, match="< 1"):
        split_counts(10, 0.5, 0.5)


def test_assignment_is_order_independent_and_seeded():
    groups = [f"p{i}" for i in range(20)]
    a = assign_splits(groups, 0.2, 0.2, seed=0)
    assert a == assign_splits(list(reversed(groups)) + groups, 0.2, 0.2, seed=0)
    assert a != assign_splits(groups, 0.2, 0.2, seed=1)
    assert sorted(a.values()).count("test") == 4 and sorted(a.values()).count("val") == 4
    with pytest.raises(ValueError, match="seed"):
        assign_splits(groups, 0.2, 0.2, seed=-3)


def test_empty_split_is_an_error(tmp_path):
    from data_writers import write_dsb_kaggle

    from spatialrec.data import DSB2018

    write_dsb_kaggle(tmp_path, n=4)
    with pytest.raises(DatasetError, match="val split.*is empty"):
        DSB2018(tmp_path, split="val", val_fraction=0.0)
