"""LiTS and SegTHOR readers on tiny NIfTI volumes (.nii and .nii.gz, with voxel spacing)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_writers import ct_volume, write_lits, write_msd_liver, write_nifti, write_segthor

from spatialrec.data import DatasetError, LiTS, SegTHOR
from spatialrec.data import _ct


def _slice(vol: np.ndarray, z: int) -> np.ndarray:
    return vol[:, :, z].T  # the reader's orientation: rows = second voxel axis


def test_lits_slices_masks_window_and_spacing(tmp_path):
    truth = write_lits(tmp_path / "lits")
    cache = tmp_path / "cache"
    ds = LiTS(tmp_path / "lits", split="all", size=None, cache_dir=cache)
    assert len(ds) == 3 * 4 and ds.in_channels == 1 and ds.num_classes == 1
    for i, sid in enumerate(ds.ids):
        vol, z = sid.split("/slice")
        hu, lab = truth[vol]
        item = ds[i]
        assert item["id"] == sid
        expected = (np.clip(_slice(hu, int(z)), -200, 250) + 200) / 450
        np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=2e-3)  # float16 cache
        np.testing.assert_array_equal(item["mask"][0].numpy(), (_slice(lab, int(z)) > 0).astype(np.float32))
        torch.testing.assert_close(item["spacing"], torch.tensor([0.8, 0.7]))
        assert item["image"].dtype == torch.float32 and item["spacing"].dtype == torch.float32


def test_lits_targets_and_raw_hu(tmp_path):
    truth = write_lits(tmp_path / "lits", n=3)
    kw = dict(split="all", size=None, cache_dir=tmp_path / "cache")
    tumour = LiTS(tmp_path / "lits", target="tumour", **kw)
    both = LiTS(tmp_path / "lits", target="both", **kw)
    raw = LiTS(tmp_path / "lits", hu_window=None, scale=False, **kw)
    assert both.num_classes == 2
    i = tumour.ids.index("volume-1/slice0002")
    lab = _slice(truth["volume-1"][1], 2)
    assert (lab == 2).any()
    np.testing.assert_array_equal(tumour[i]["mask"][0].numpy(), (lab == 2).astype(np.float32))
    np.testing.assert_array_equal(both[i]["mask"].numpy(), np.stack([lab > 0, lab == 2]).astype(np.float32))
    np.testing.assert_array_equal(raw[i]["image"][0].numpy(), _slice(truth["volume-1"][0], 2).astype(np.float32))


def test_lits_resize_adjusts_spacing(tmp_path):
    write_lits(tmp_path / "lits", n=3)
    ds = LiTS(tmp_path / "lits", split="all", size=(4, 2), cache_dir=tmp_path / "c")
    item = ds[0]
    assert item["image"].shape == (1, 4, 2) and item["mask"].shape == (1, 4, 2)
    torch.testing.assert_close(item["spacing"], torch.tensor([0.8 * 2, 0.7 * 4]))
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}


def test_lits_cache_is_reused(tmp_path, monkeypatch):
    write_lits(tmp_path / "lits", n=3)
    first = LiTS(tmp_path / "lits", split="all", cache_dir=tmp_path / "c", size=4)
    ref = [first[i]["image"] for i in range(len(first))]

    def no_reading(*a, **k):
        raise AssertionError("volumes must not be re-read once cached")

    monkeypatch.setattr(_ct, "read_nifti", no_reading)
    again = LiTS(tmp_path / "lits", split="all", cache_dir=tmp_path / "c", size=4, target="tumour")
    for i in range(len(again)):
        torch.testing.assert_close(again[i]["image"], ref[i])
    with pytest.raises(AssertionError, match="re-read"):  # another window is another cache entry
        LiTS(tmp_path / "lits", split="all", cache_dir=tmp_path / "c", size=4, hu_window=(-100, 100))


def test_lits_split_by_volume_and_slice_filter(tmp_path):
    write_lits(tmp_path / "lits", n=5)
    kw = dict(cache_dir=tmp_path / "c", size=None, val_fraction=0.2, test_fraction=0.2, seed=3)
    vols = {}
    for s in ("train", "val", "test"):
        ds = LiTS(tmp_path / "lits", split=s, **kw)
        vols[s] = {i.split("/")[0] for i in ds.ids}
        assert len(ds) == 4 * len(vols[s])  # every slice of a volume stays together
    assert [len(vols[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert not (vols["train"] & vols["val"]) and not (vols["train"] & vols["test"]) and not (vols["val"] & vols["test"])
    fg = LiTS(tmp_path / "lits", split="all", slice_filter="foreground", **kw)
    assert 0 < len(fg) < 20 and all(fg[i]["mask"].sum() > 0 for i in range(len(fg)))


def test_lits_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*Expected layout"):
        LiTS(tmp_path / "nowhere", cache_dir=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no volume-<n>"):
        LiTS(tmp_path / "empty", cache_dir=tmp_path / "c")
    write_lits(tmp_path / "a", n=3)
    (tmp_path / "a" / "Training Batch 1" / "segmentation-1.nii.gz").unlink()
    with pytest.raises(DatasetError, match="volume-1.nii.gz.*has no segmentation"):
        LiTS(tmp_path / "a", cache_dir=tmp_path / "c")
    write_lits(tmp_path / "b", n=3)
    (tmp_path / "b" / "Training Batch 1" / "volume-0.nii").unlink()
    with pytest.raises(DatasetError, match="segmentation-0.nii.*has no volume"):
        LiTS(tmp_path / "b", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="target"):
        LiTS(tmp_path / "b", target="kidney", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="slice_filter"):
        LiTS(tmp_path / "b", slice_filter="some", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="hu_window"):
        LiTS(tmp_path / "b", hu_window=(100, -100), cache_dir=tmp_path / "c")
    # a wrong type is a TypeError (spatialrec.checks), a wrong name a ValueError
    with pytest.raises(TypeError, match="target must be a string.*got int 1"):
        LiTS(tmp_path / "b", target=1, cache_dir=tmp_path / "c")
    with pytest.raises(TypeError, match="slice_filter must be a string.*got bool True"):
        LiTS(tmp_path / "b", slice_filter=True, cache_dir=tmp_path / "c")
    with pytest.raises(TypeError, match="label_alignment must be a string.*got NoneType None"):
        LiTS(tmp_path / "b", label_alignment=None, cache_dir=tmp_path / "c")
    with pytest.raises(TypeError, match="split must be a string.*got int 0"):
        LiTS(tmp_path / "b", split=0, cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    "corrupt, message",
    [
        ("labels", r"segmentation-2.nii.*values \[3\]"),
        ("shape", r"segmentation-2.nii.*shape"),
        ("unreadable", r"cannot read NIfTI file.*volume-2.nii"),
    ],
)
def test_lits_bad_files_name_the_file(tmp_path, corrupt, message):
    write_lits(tmp_path / "l", n=3)
    folder = tmp_path / "l" / "Training Batch 2"
    hu, lab = ct_volume(2)
    if corrupt == "labels":
        lab[0, 0, 0] = 3
        write_nifti(folder / "segmentation-2.nii", lab)
    elif corrupt == "shape":
        write_nifti(folder / "segmentation-2.nii", lab[:, :, :3])
    else:
        (folder / "volume-2.nii").write_bytes(b"\x00" * 20)
    with pytest.raises(DatasetError, match=message):
        LiTS(tmp_path / "l", split="all", cache_dir=tmp_path / "c")


def test_segthor_organs_and_patient_split(tmp_path):
    truth = write_segthor(tmp_path / "s" / "train", n=5)
    kw = dict(cache_dir=tmp_path / "c", size=None, val_fraction=0.2, test_fraction=0.2)
    aorta = SegTHOR(tmp_path / "s", split="all", **kw)  # finds the patients under train/
    assert aorta.num_classes == 1 and len(aorta) == 5 * 4
    every = SegTHOR(tmp_path / "s" / "train", split="all", organ="all", **kw)
    assert every.num_classes == 4
    i = every.ids.index("Patient_02/slice0002")
    lab = _slice(truth["Patient_02"][1], 2)
    np.testing.assert_array_equal(
        every[i]["mask"].numpy(), np.stack([lab == v for v in (1, 2, 3, 4)]).astype(np.float32)
    )
    np.testing.assert_array_equal(aorta[i]["mask"][0].numpy(), (lab == 4).astype(np.float32))
    torch.testing.assert_close(every[i]["spacing"], torch.tensor([0.9, 0.9]))
    heart = SegTHOR(tmp_path / "s", split="all", organ="heart", slice_filter="foreground", **kw)
    assert all(heart[j]["mask"].sum() > 0 for j in range(len(heart)))
    patients = {s: {x.split("/")[0] for x in SegTHOR(tmp_path / "s", split=s, **kw).ids} for s in ("train", "val", "test")}
    assert [len(patients[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert set().union(*patients.values()) == set(truth)
    assert not (patients["train"] & patients["val"]) and not (patients["val"] & patients["test"])
    assert not (patients["train"] & patients["test"])
    assert SegTHOR(tmp_path / "s", split="all", organ="esophagus", **kw).organ == "oesophagus"


def test_segthor_bad_input(tmp_path):
    write_segthor(tmp_path / "s", n=3)
    with pytest.raises(ValueError, match="organ"):
        SegTHOR(tmp_path / "s", organ="lung", cache_dir=tmp_path / "c")
    with pytest.raises(TypeError, match="organ must be a string.*got NoneType None"):
        SegTHOR(tmp_path / "s", organ=None, cache_dir=tmp_path / "c")
    (tmp_path / "s" / "Patient_02" / "GT.nii.gz").unlink()
    with pytest.raises(DatasetError, match="Patient_02.nii.gz.*has no ground truth"):
        SegTHOR(tmp_path / "s", cache_dir=tmp_path / "c")
    (tmp_path / "t").mkdir()
    with pytest.raises(DatasetError, match="no Patient_<nn> folders.*Expected layout"):
        SegTHOR(tmp_path / "t", cache_dir=tmp_path / "c")
    write_segthor(tmp_path / "u", n=3)
    hu, lab = ct_volume(0, labels=(0, 1, 2, 3, 4))
    lab[0, 0, 0] = 7
    write_nifti(tmp_path / "u" / "Patient_03" / "GT.nii.gz", lab, zooms=(0.9, 0.9, 2.0))  # the volume's grid
    with pytest.raises(DatasetError, match=r"Patient_03/GT.nii.gz.*values \[7\]"):
        SegTHOR(tmp_path / "u", split="all", cache_dir=tmp_path / "c")


# --- LiTS through the Medical Segmentation Decathlon (Task03_Liver) -------------------------------


@pytest.mark.parametrize("level", ["parent", "task"])
def test_lits_reads_the_msd_task03_liver_layout(tmp_path, level, caplog):
    truth = write_msd_liver(tmp_path / "msd", n=3, shape=(8, 8, 4), n_test=2)
    root = tmp_path / "msd" if level == "parent" else tmp_path / "msd" / "Task03_Liver"
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = LiTS(root, split="all", size=None, target="both", cache_dir=tmp_path / "c")
    assert "imagesTs" in caplog.text  # the unlabelled test images are skipped, and that is said
    assert {i.split("/")[0] for i in ds.ids} == {"liver_0", "liver_1", "liver_2"}  # not liver_3/4 (imagesTs)
    assert len(ds) == 3 * 4 and ds.num_classes == 2
    for i, sid in enumerate(ds.ids):
        vol, z = sid.split("/slice")
        hu, lab = truth[vol]
        item = ds[i]
        expected = (np.clip(_slice(hu, int(z)), -200, 250) + 200) / 450
        np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=2e-3)
        lab_z = _slice(lab, int(z))
        np.testing.assert_array_equal(item["mask"].numpy(), np.stack([lab_z > 0, lab_z == 2]).astype(np.float32))
        torch.testing.assert_close(item["spacing"], torch.tensor([0.8, 0.7]))
    # split by volume as for the LiTS file names
    kw = dict(size=None, cache_dir=tmp_path / "c", val_fraction=0.2, test_fraction=0.2)
    write_msd_liver(tmp_path / "msd5", n=5, n_test=0)
    parts = [{x.split("/")[0] for x in LiTS(tmp_path / "msd5", split=s, **kw).ids} for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [3, 1, 1] and len(set().union(*parts)) == 5


def test_lits_msd_errors_name_the_file(tmp_path):
    write_msd_liver(tmp_path / "a", n=3)
    (tmp_path / "a" / "Task03_Liver" / "labelsTr" / "liver_1.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"imagesTr/liver_1.nii.gz.*has no labels"):
        LiTS(tmp_path / "a", cache_dir=tmp_path / "c")
    write_msd_liver(tmp_path / "b", n=3)
    (tmp_path / "b" / "Task03_Liver" / "imagesTr" / "liver_2.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"labelsTr/liver_2.nii.gz.*has no image"):
        LiTS(tmp_path / "b", cache_dir=tmp_path / "c")
    write_msd_liver(tmp_path / "d", n=3, junk=False)
    hu, lab = ct_volume(21)
    lab[0, 0, 0] = 3
    write_nifti(tmp_path / "d" / "Task03_Liver" / "labelsTr" / "liver_1.nii.gz", lab)
    with pytest.raises(DatasetError, match=r"labelsTr/liver_1.nii.gz.*values \[3\]"):
        LiTS(tmp_path / "d", split="all", cache_dir=tmp_path / "c")


def test_lits_prefers_lits_names_when_both_layouts_are_present(tmp_path, caplog):
    write_lits(tmp_path / "both" / "lits", n=3)
    write_msd_liver(tmp_path / "both" / "msd", n=3)
    with caplog.at_level(logging.WARNING, logger="spatialrec.data"):
        ds = LiTS(tmp_path / "both", split="all", size=None, cache_dir=tmp_path / "c")
    assert {i.split("/")[0] for i in ds.ids} == {"volume-0", "volume-1", "volume-2"}  # as before
    assert "Task03_Liver" in caplog.text and "ignor" in caplog.text
