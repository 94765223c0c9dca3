"""Tests of whole-volume reading from the CT readers' cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatialrec.data import LiTS, SegTHOR
from spatialrec.data.volumes3d import CTVolumes

from data_writers import write_lits, write_segthor


def test_lits_volumes_match_the_nifti_files(tmp_path) -> None:
    truth = write_lits(tmp_path / "lits", n=3, shape=(12, 10, 9))  # (X, Y, Z)
    reader = LiTS(tmp_path / "lits", split="all", size=None, cache_dir=tmp_path / "c")
    vols = CTVolumes(reader)
    assert len(vols) == 3 and vols.in_channels == 1 and vols.num_classes == 1
    for i in range(len(vols)):
        item = vols[i]
        hu, lab = truth[item["id"]]
        assert item["image"].shape == (1, 9, 10, 12) and item["mask"].shape == (1, 9, 10, 12)
        expected = (np.clip(hu.astype(np.float32), -200, 250) + 200) / 450  # the reader's default window
        # (Z, rows=Y, cols=X), stored as float16 by the reader's cache
        np.testing.assert_allclose(item["image"][0].numpy(), expected.transpose(2, 1, 0), atol=1e-3)
        np.testing.assert_array_equal(item["mask"][0].numpy(), (lab > 0).transpose(2, 1, 0).astype(np.float32))
        torch.testing.assert_close(item["spacing"], torch.tensor([2.5, 0.8, 0.7]))


def test_resized_volumes_and_multi_class_segthor(tmp_path) -> None:
    truth = write_segthor(tmp_path / "s", n=3, shape=(12, 10, 9))
    reader = SegTHOR(tmp_path / "s", split="all", organ="all", size=(5, 6), cache_dir=tmp_path / "c")
    vols = CTVolumes(reader)
    item = vols[0]
    assert item["image"].shape == (1, 9, 5, 6) and item["mask"].shape == (4, 9, 5, 6)
    # in-plane spacing follows the resize (10 rows -> 5, 12 cols -> 6); the slice spacing does not
    torch.testing.assert_close(item["spacing"], torch.tensor([2.0, 1.8, 1.8]))
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
    assert item["id"] in truth


def test_bad_reader_and_index(tmp_path) -> None:
    with pytest.raises(TypeError, match="CT slice reader"):
        CTVolumes([1, 2, 3])
    write_lits(tmp_path / "lits", n=3, shape=(8, 8, 8))
    vols = CTVolumes(LiTS(tmp_path / "lits", split="all", size=None, cache_dir=tmp_path / "c"))
    with pytest.raises(IndexError):
        vols[3]
