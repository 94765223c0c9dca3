"""CT readers compare image and label NIfTI grids: reorient labels stored with other axes, refuse misfits."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_writers import ct_volume, reoriented, write_lits, write_nifti_affine, write_segthor

from spatialrec.data import CTVolumes, DatasetError, LiTS, SegTHOR

SHAPE = (12, 10, 9)  # (X, Y, Z), all different so a swapped axis shows
LITS_ZOOMS = (0.7, 0.8, 2.5)

# nibabel orientation transforms: (new axis for each old axis, +1 keep / -1 flip)
REORIENTATIONS = {
    "flip-x": [[0, -1], [1, 1], [2, 1]],
    "flip-y-and-z": [[0, 1], [1, -1], [2, -1]],
    "swap-xy": [[1, 1], [0, 1], [2, 1]],
    "swap-xy-flip-x": [[1, -1], [0, 1], [2, 1]],
    "z-first": [[2, 1], [0, -1], [1, 1]],
}


def _slice(vol: np.ndarray, z: int) -> np.ndarray:
    return vol[:, :, z].T


def _lits_with_labels(root, labels: np.ndarray, affine: np.ndarray, oriented: bool = True):
    truth = write_lits(root, n=3, shape=SHAPE)
    write_nifti_affine(root / "Training Batch 1" / "segmentation-1.nii.gz", labels, affine, oriented)
    return truth


@pytest.mark.parametrize("name", sorted(REORIENTATIONS))
def test_labels_stored_with_other_axes_are_read_aligned(tmp_path, name, caplog):
    _, lab = ct_volume(1, SHAPE)
    affine = np.diag([*LITS_ZOOMS, 1.0])
    stored, stored_affine = reoriented(lab, affine, REORIENTATIONS[name])
    assert not np.array_equal(np.asarray(stored).shape, SHAPE) or not np.array_equal(stored, lab)
    truth = _lits_with_labels(tmp_path / "lits", stored, stored_affine)
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = LiTS(tmp_path / "lits", split="all", size=None, target="both", cache_dir=tmp_path / "c")
    assert "segmentation-1.nii.gz" in caplog.text and "reoriented" in caplog.text
    ids = [i for i in ds.ids if i.startswith("volume-1/")]
    assert len(ids) == SHAPE[2]
    for sid in ids:
        z = int(sid.split("slice")[1])
        expected = _slice(truth["volume-1"][1], z)
        got = ds[ds.ids.index(sid)]["mask"].numpy()
        np.testing.assert_array_equal(got, np.stack([expected > 0, expected == 2]).astype(np.float32))
    # the volume view reads the same aligned labels
    vols = CTVolumes(ds)
    item = vols[vols.volume_ids.index("volume-1")]
    np.testing.assert_array_equal(item["mask"][0].numpy(), (lab > 0).transpose(2, 1, 0).astype(np.float32))
    torch.testing.assert_close(item["spacing"], torch.tensor([2.5, 0.8, 0.7]))


def test_segthor_flipped_ground_truth_is_read_aligned(tmp_path):
    truth = write_segthor(tmp_path / "s", n=3, shape=SHAPE)
    lab = truth["Patient_02"][1]
    stored, stored_affine = reoriented(lab, np.diag([0.9, 0.9, 2.0, 1.0]), REORIENTATIONS["swap-xy-flip-x"])
    write_nifti_affine(tmp_path / "s" / "Patient_02" / "GT.nii.gz", stored, stored_affine)
    ds = SegTHOR(tmp_path / "s", split="all", organ="all", size=None, cache_dir=tmp_path / "c")
    for z in range(SHAPE[2]):
        got = ds[ds.ids.index(f"Patient_02/slice{z:04d}")]["mask"].numpy()
        expected = np.stack([_slice(lab, z) == v for v in (1, 2, 3, 4)]).astype(np.float32)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "change, message",
    [
        ("spacing", r"differ in voxel size\b"),
        ("origin", r"differ in origin\b"),
        ("shape-after-flip", r"shape"),
        ("rotation", r"differ in orientation\b"),
    ],
)
def test_labels_on_another_grid_are_refused_naming_both_files(tmp_path, change, message):
    _, lab = ct_volume(1, SHAPE)
    affine = np.diag([*LITS_ZOOMS, 1.0])
    if change == "spacing":
        affine = np.diag([0.7, 0.8, 3.0, 1.0])
    elif change == "origin":
        affine[:3, 3] = (5.0, 0.0, 0.0)  # 7 voxels off along x
    elif change == "shape-after-flip":
        lab, affine = reoriented(lab[:, :, :8], affine, REORIENTATIONS["flip-x"])
    else:  # 30 degrees about z: no axis permutation or flip maps it onto the volume
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(LITS_ZOOMS)
    _lits_with_labels(tmp_path / "lits", lab, affine)
    with pytest.raises(DatasetError, match=message) as info:
        LiTS(tmp_path / "lits", split="all", size=None, cache_dir=tmp_path / "c")
    text = str(info.value)
    assert "segmentation-1.nii.gz" in text and "volume-1.nii.gz" in text


def test_rounding_noise_in_the_affine_is_accepted_silently(tmp_path, caplog):
    _, lab = ct_volume(1, SHAPE)
    affine = np.diag([*LITS_ZOOMS, 1.0])
    affine[:3, :3] += 1e-5
    affine[:3, 3] += 1e-4
    truth = _lits_with_labels(tmp_path / "lits", lab, affine)
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = LiTS(tmp_path / "lits", split="all", size=None, cache_dir=tmp_path / "c")
    assert "reoriented" not in caplog.text and "cannot" not in caplog.text
    i = ds.ids.index("volume-1/slice0002")
    np.testing.assert_array_equal(ds[i]["mask"][0].numpy(), (_slice(truth["volume-1"][1], 2) > 0).astype(np.float32))


def test_labels_without_orientation_are_read_as_before_with_a_warning(tmp_path, caplog):
    _, lab = ct_volume(1, SHAPE)
    truth = _lits_with_labels(tmp_path / "lits", lab, np.diag([*LITS_ZOOMS, 1.0]), oriented=False)
    with caplog.at_level(logging.WARNING, logger="spatialrec.data"):
        ds = LiTS(tmp_path / "lits", split="all", size=None, cache_dir=tmp_path / "c")
    assert "segmentation-1.nii.gz" in caplog.text and "no orientation" in caplog.text
    i = ds.ids.index("volume-1/slice0003")
    np.testing.assert_array_equal(ds[i]["mask"][0].numpy(), (_slice(truth["volume-1"][1], 3) > 0).astype(np.float32))


def test_label_alignment_as_stored_skips_the_header_check(tmp_path):
    _, lab = ct_volume(1, SHAPE)
    affine = np.diag([*LITS_ZOOMS, 1.0])
    affine[:3, 3] = (5.0, 0.0, 0.0)  # a wrong header on labels whose voxels match the volume's
    _lits_with_labels(tmp_path / "lits", lab, affine)
    kw = dict(split="all", size=None, cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="as_stored"):  # the refusal says how to override it
        LiTS(tmp_path / "lits", **kw)
    ds = LiTS(tmp_path / "lits", label_alignment="as_stored", **kw)
    i = ds.ids.index("volume-1/slice0002")
    np.testing.assert_array_equal(ds[i]["mask"][0].numpy(), (_slice(lab, 2) > 0).astype(np.float32))
    with pytest.raises(ValueError, match="label_alignment"):
        SegTHOR(tmp_path / "lits", label_alignment="trust", **kw)
