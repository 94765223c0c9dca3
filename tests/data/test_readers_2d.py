"""DSB2018 and CVC-ClinicDB readers on tiny files in the real layouts."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from data_writers import Image, write_cvc, write_cvc_mirror, write_dsb_kaggle, write_dsb_preprocessed

from spatialrec.data import CVCClinicDB, DatasetError, DSB2018, make_splits


def _all_ids(cls, root, **kw):
    return {s: set(cls(root, split=s, **kw).ids) for s in ("train", "val", "test")}


# --- DSB2018 -------------------------------------------------------------------------------------


def test_dsb_kaggle_layout_merges_nuclei(tmp_path):
    truth = write_dsb_kaggle(tmp_path)
    ds = DSB2018(tmp_path, split="all", size=None)
    assert ds.layout == "kaggle" and len(ds) == 5 and ds.in_channels == 3 and ds.num_classes == 1
    for i, sid in enumerate(ds.ids):
        item = ds[i]
        rgb, union = truth[sid]
        assert item["id"] == sid and set(item) == {"image", "mask", "id"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 10, 12)
        np.testing.assert_allclose(item["image"].numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
        np.testing.assert_array_equal(item["mask"][0].numpy(), union.astype(np.float32))


def test_dsb_skips_macos_archive_debris(tmp_path):
    # A zip made on a Mac unpacks with __MACOSX/ (a ._<name> resource fork per file) beside the data,
    # and a Finder copy may leave ._<name> files beside each file: none of them is a sample or a mask.
    truth = write_dsb_kaggle(tmp_path)
    for sid in truth:
        (tmp_path / "__MACOSX" / sid / "images").mkdir(parents=True)
        (tmp_path / "__MACOSX" / sid / "images" / f"._{sid}.png").write_bytes(b"\x00\x05\x16\x07 not a png")
        (tmp_path / sid / "masks" / "._nucleus0.png").write_bytes(b"\x00\x05\x16\x07 not a png")
    ds = DSB2018(tmp_path, split="all", size=None)
    assert sorted(ds.ids) == sorted(truth) and "__MACOSX" not in ds.ids
    for i, sid in enumerate(ds.ids):
        np.testing.assert_array_equal(ds[i]["mask"][0].numpy(), truth[sid][1].astype(np.float32))
    pre = tmp_path / "pre"
    write_dsb_preprocessed(pre)
    (pre / "images" / "._img0.png").write_bytes(b"\x00\x05\x16\x07")
    (pre / "masks" / "0" / "._img1.png").write_bytes(b"\x00\x05\x16\x07")
    assert sorted(DSB2018(pre, split="all", size=None).ids) == ["img0", "img1", "img2", "img3"]


def test_dsb_resize_default_and_grayscale(tmp_path):
    write_dsb_kaggle(tmp_path)
    ds = DSB2018(tmp_path, split="all")
    assert ds[0]["image"].shape == (3, 96, 96) and ds[0]["mask"].shape == (1, 96, 96)
    assert set(ds[0]["mask"].unique().tolist()) <= {0.0, 1.0}
    g = DSB2018(tmp_path, split="all", size=(6, 8), grayscale=True)
    assert g.in_channels == 1 and g[0]["image"].shape == (1, 6, 8)


def test_dsb_preprocessed_layout(tmp_path):
    truth = write_dsb_preprocessed(tmp_path)
    ds = DSB2018(tmp_path, split="all", size=None)
    assert ds.layout == "preprocessed" and sorted(ds.ids) == sorted(truth)
    item = ds[ds.ids.index("img2")]
    np.testing.assert_array_equal(item["mask"][0].numpy(), truth["img2"][1].astype(np.float32))


def test_dsb_splits_are_disjoint_and_seeded(tmp_path):
    write_dsb_kaggle(tmp_path, n=10)
    ids = _all_ids(DSB2018, tmp_path, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert set().union(*ids.values()) == set(DSB2018(tmp_path, split="all").ids)
    assert ids == _all_ids(DSB2018, tmp_path, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert ids != _all_ids(DSB2018, tmp_path, val_fraction=0.2, test_fraction=0.2, seed=2)


def test_make_splits_transform_only_on_train(tmp_path):
    write_dsb_kaggle(tmp_path, n=10)
    calls = []

    def tf(image, mask):
        calls.append(image.shape)
        return image, mask

    train, val, test = make_splits(DSB2018, tmp_path, size=8, train_transform=tf)
    val[0], test[0]
    assert not calls
    train[0]
    assert calls == [torch.Size([3, 8, 8])]  # applied after the resize


def test_dsb_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.*Expected layout"):
        DSB2018(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no sample folders"):
        DSB2018(tmp_path / "empty")
    write_dsb_kaggle(tmp_path / "k")
    sid = sorted(p.name for p in (tmp_path / "k").iterdir())[1]
    for m in (tmp_path / "k" / sid / "masks").iterdir():
        m.unlink()
    with pytest.raises(DatasetError, match=f"{sid}.png.*has no masks"):
        DSB2018(tmp_path / "k")
    # preprocessed: image without mask, mask without image
    write_dsb_preprocessed(tmp_path / "p")
    (tmp_path / "p" / "masks" / "0" / "img1.png").unlink()
    with pytest.raises(DatasetError, match="img1.png.*has no mask"):
        DSB2018(tmp_path / "p")
    write_dsb_preprocessed(tmp_path / "q")
    (tmp_path / "q" / "images" / "img3.png").unlink()
    with pytest.raises(DatasetError, match="mask.*img3.png.*has no image"):
        DSB2018(tmp_path / "q")
    with pytest.raises(ValueError, match="layout"):
        DSB2018(tmp_path / "q", layout="zip")
    with pytest.raises(ValueError, match="split"):
        DSB2018(tmp_path / "k", split="validation")
    with pytest.raises(TypeError, match="layout must be a string.*got int 0"):
        DSB2018(tmp_path / "q", layout=0)
    with pytest.raises(TypeError, match="split must be a string.*got NoneType None"):
        DSB2018(tmp_path / "k", split=None)


def test_dsb_size_mismatch_and_unreadable_name_the_file(tmp_path):
    write_dsb_kaggle(tmp_path, n=3)
    ds = DSB2018(tmp_path, split="all")
    bad = tmp_path / ds.ids[0] / "masks" / "nucleus0.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(bad)
    with pytest.raises(DatasetError, match="nucleus0.png.*size"):
        ds[0]
    with pytest.raises(DatasetError, match="nucleus0.png"):
        ds.verify()
    (tmp_path / ds.ids[1] / "images" / f"{ds.ids[1]}.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"cannot read image file.*{ds.ids[1]}.png"):
        ds[1]


def test_too_few_samples_for_the_split(tmp_path):
    write_dsb_kaggle(tmp_path, n=2)
    with pytest.raises(DatasetError, match="too few"):
        DSB2018(tmp_path)
    assert len(DSB2018(tmp_path, val_fraction=0.0, test_fraction=0.4, split="test")) == 1


# --- CVC-ClinicDB -------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_cvc_reads_tiff_and_png_editions(tmp_path, ext, caplog):
    truth = write_cvc(tmp_path, ext=ext)
    with caplog.at_level(logging.WARNING, logger="spatialrec.data"):
        ds = CVCClinicDB(tmp_path, split="all", size=None)
    assert "no sequence_csv" in caplog.text
    assert ds.ids == [str(i) for i in range(1, 7)]  # numeric order
    assert ds.in_channels == 3 and ds.num_classes == 1
    item = ds[2]
    rgb, m = truth["3"]
    np.testing.assert_allclose(item["image"].numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(item["mask"][0].numpy(), m.astype(np.float32))
    assert CVCClinicDB(tmp_path, split="all")[0]["image"].shape == (3, 96, 128)


def test_cvc_sequence_split(tmp_path, caplog):
    write_cvc(tmp_path, n=10)
    csv = tmp_path / "seq.csv"
    seq_of = {i: f"seq{(i - 1) // 2}" for i in range(1, 11)}  # 5 sequences of 2 frames
    csv.write_text("frame,sequence\n" + "".join(f"{i}.tif,{s}\n" for i, s in seq_of.items()))
    with caplog.at_level(logging.WARNING, logger="spatialrec.data"):
        ids = _all_ids(CVCClinicDB, tmp_path, sequence_csv=csv, val_fraction=0.2, test_fraction=0.2)
    assert "no sequence_csv" not in caplog.text
    seqs = {s: {seq_of[int(i)] for i in ids[s]} for s in ids}
    assert all(len(ids[s]) == 2 * len(seqs[s]) for s in ids)  # whole sequences only
    assert not (seqs["train"] & seqs["val"]) and not (seqs["train"] & seqs["test"]) and not (seqs["val"] & seqs["test"])
    assert sum(len(v) for v in ids.values()) == 10
    # headerless two-column CSV gives the same split
    csv2 = tmp_path / "seq2.csv"
    csv2.write_text("".join(f"{i},{s}\n" for i, s in seq_of.items()))
    assert ids == _all_ids(CVCClinicDB, tmp_path, sequence_csv=csv2, val_fraction=0.2, test_fraction=0.2)


def test_cvc_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="Original.*Expected layout"):
        (tmp_path / "a").mkdir()
        CVCClinicDB(tmp_path / "a")
    write_cvc(tmp_path / "b")
    (tmp_path / "b" / "Ground Truth" / "4.tif").unlink()
    with pytest.raises(DatasetError, match="4.tif.*has no mask"):
        CVCClinicDB(tmp_path / "b")
    write_cvc(tmp_path / "c")
    (tmp_path / "c" / "Original" / "5.tif").unlink()
    with pytest.raises(DatasetError, match="mask.*5.tif.*has no image"):
        CVCClinicDB(tmp_path / "c")
    write_cvc(tmp_path / "d")
    csv = tmp_path / "partial.csv"
    csv.write_text("frame,sequence\n1,a\n2,a\n3,b\n4,b\n5,c\n")
    with pytest.raises(DatasetError, match="6.tif.*not listed"):
        CVCClinicDB(tmp_path / "d", sequence_csv=csv)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        CVCClinicDB(tmp_path / "d", sequence_csv=tmp_path / "nope.csv")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d" / "Ground Truth" / "2.tif")
    ds = CVCClinicDB(tmp_path / "d", split="all")
    with pytest.raises(DatasetError, match="2.tif.*size"):
        ds[1]
    (tmp_path / "e" / "Original").mkdir(parents=True)
    (tmp_path / "e" / "Ground Truth").mkdir()
    with pytest.raises(DatasetError, match="no .tif/.png frames"):
        CVCClinicDB(tmp_path / "e")


def test_cvc_zero_one_masks(tmp_path):
    write_cvc(tmp_path, n=3)
    m = np.zeros((9, 12), np.uint8)
    m[1:3, 1:3] = 1  # an edition that stores 0/1
    Image.fromarray(m).save(tmp_path / "Ground Truth" / "1.tif")
    assert CVCClinicDB(tmp_path, split="all", size=None)[0]["mask"].sum() == 4


# --- CVC-ClinicDB mirrors (issue 16) --------------------------------------------------------------


def test_cvc_mirror_metadata_csv_is_a_sequence_file(tmp_path):
    write_cvc_mirror(tmp_path, n=10, frames_per_sequence=2)
    kw = dict(sequence_csv=tmp_path / "metadata.csv", val_fraction=0.2, test_fraction=0.2)
    ids = _all_ids(CVCClinicDB, tmp_path / "TIF", **kw)
    seq_of = {str(i): (i - 1) // 2 for i in range(1, 11)}
    seqs = {s: {seq_of[i] for i in ids[s]} for s in ids}
    assert all(len(ids[s]) == 2 * len(seqs[s]) for s in ids)  # whole sequences only
    assert not (seqs["train"] & seqs["val"]) and not (seqs["train"] & seqs["test"]) and not (seqs["val"] & seqs["test"])
    ds = CVCClinicDB(tmp_path / "TIF", split="all", sequence_csv=tmp_path / "metadata.csv")
    assert ds.groups["3"] == ds.groups["4"] == "2" and ds.groups["5"] == "3"


def test_cvc_mirror_top_folder_reads_the_tif_edition_and_says_so(tmp_path, caplog):
    truth = write_cvc_mirror(tmp_path / "cvc", n=6)
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = CVCClinicDB(tmp_path / "cvc", split="all", size=None)
    assert ds.data_dir == tmp_path / "cvc" / "TIF" and ds.root == tmp_path / "cvc"
    assert "TIF" in caplog.text and "PNG" in caplog.text  # which edition, and the other one
    assert "metadata.csv" in caplog.text  # the frame-split warning points at the sequence file
    item = ds[ds.ids.index("3")]
    np.testing.assert_array_equal(item["mask"][0].numpy(), truth["3"][1].astype(np.float32))
    # the sequence file of the mirror, passed explicitly, splits by sequence from the top folder too
    seq = CVCClinicDB(tmp_path / "cvc", split="all", sequence_csv=tmp_path / "cvc" / "metadata.csv")
    assert len(set(seq.groups.values())) == 3
    # naming the edition still works and reads the other one
    png = CVCClinicDB(tmp_path / "cvc" / "PNG", split="all", size=None)
    assert png.data_dir == tmp_path / "cvc" / "PNG" and png._samples[0][0].suffix == ".png"


def test_cvc_finds_a_single_nested_edition_or_says_which_folder_to_pass(tmp_path, caplog):
    write_cvc(tmp_path / "a" / "CVC-ClinicDB", n=6)
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = CVCClinicDB(tmp_path / "a", split="all")
    assert ds.data_dir == tmp_path / "a" / "CVC-ClinicDB" and "CVC-ClinicDB" in caplog.text
    write_cvc(tmp_path / "b" / "copy1", n=6)
    write_cvc(tmp_path / "b" / "copy2", n=6)
    with pytest.raises(DatasetError, match=r"copy1.*copy2.*pass one"):
        CVCClinicDB(tmp_path / "b")
    (tmp_path / "c" / "junk").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Original.*pass the folder that holds"):
        CVCClinicDB(tmp_path / "c")


# --- DSB2018: where the samples are, and the merged-mask cache (issue 16) ------------------------


def _write_stage1_test(folder, n=3):
    """The competition's unlabelled test images: <id>/images/<id>.png and no masks/."""
    for i in range(n):
        sid = f"test{i}"
        (folder / sid / "images").mkdir(parents=True)
        Image.fromarray(np.zeros((6, 7, 4), np.uint8), "RGBA").save(folder / sid / "images" / f"{sid}.png")


def test_dsb_finds_stage1_train_in_the_competition_folder(tmp_path, caplog):
    truth = write_dsb_kaggle(tmp_path / "comp" / "stage1_train")
    _write_stage1_test(tmp_path / "comp" / "stage1_test")
    (tmp_path / "comp" / "stage1_train_labels.csv").write_text("ImageId,EncodedPixels\n")
    with caplog.at_level(logging.INFO, logger="spatialrec.data"):
        ds = DSB2018(tmp_path / "comp", split="all", size=None)
    assert ds.data_dir == tmp_path / "comp" / "stage1_train" and "stage1_train" in caplog.text
    assert sorted(ds.ids) == sorted(truth)
    item = ds[ds.ids.index(sorted(truth)[1])]
    np.testing.assert_array_equal(item["mask"][0].numpy(), truth[sorted(truth)[1]][1].astype(np.float32))


def test_dsb_finds_a_doubly_nested_stage1_train(tmp_path):
    truth = write_dsb_kaggle(tmp_path / "stage1_train" / "stage1_train")
    ds = DSB2018(tmp_path / "stage1_train", split="all", size=None)
    assert ds.data_dir == tmp_path / "stage1_train" / "stage1_train" and sorted(ds.ids) == sorted(truth)


def test_dsb_says_which_folder_to_pass(tmp_path):
    _write_stage1_test(tmp_path / "comp" / "stage1_test")
    with pytest.raises(DatasetError, match=r"stage1_test.*no masks.*pass.*stage1_train"):
        DSB2018(tmp_path / "comp")
    (tmp_path / "other" / "notes").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no sample folders.*pass.*stage1_train.*Expected layout"):
        DSB2018(tmp_path / "other")
    write_dsb_kaggle(tmp_path / "two" / "a")
    write_dsb_kaggle(tmp_path / "two" / "b")
    with pytest.raises(DatasetError, match=r"a'.*b'.*pass one"):
        DSB2018(tmp_path / "two")


class _CountingReads:
    def __init__(self, monkeypatch):
        from spatialrec.data import dsb2018

        self.calls: list[str] = []
        real = dsb2018.read_image

        def counting(path, *a, **k):
            self.calls.append(path.parent.name)  # "images" or "masks"
            return real(path, *a, **k)

        monkeypatch.setattr(dsb2018, "read_image", counting)

    def masks(self) -> int:
        return self.calls.count("masks")


def test_dsb_merged_masks_are_cached_in_memory(tmp_path, monkeypatch):
    truth = write_dsb_kaggle(tmp_path, n=3)
    reads = _CountingReads(monkeypatch)
    ds = DSB2018(tmp_path, split="all", size=None)
    first = [ds[i]["mask"] for i in range(3)]
    assert reads.masks() == 6  # two nuclei per image, decoded once
    again = [ds[i]["mask"] for i in range(3)]
    assert reads.masks() == 6 and reads.calls.count("images") == 6  # images are still read each time
    for a, b, sid in zip(first, again, ds.ids):
        torch.testing.assert_close(a, b)
        np.testing.assert_array_equal(b[0].numpy(), truth[sid][1].astype(np.float32))
    off = DSB2018(tmp_path, split="all", size=None, cache_masks=False)
    off[0], off[0]
    assert reads.masks() == 6 + 4


def test_dsb_mask_cache_follows_changed_files(tmp_path):
    write_dsb_kaggle(tmp_path, n=3)
    ds = DSB2018(tmp_path, split="all", size=None)
    sid = ds.ids[0]
    before = ds[0]["mask"]
    changed = np.zeros((10, 12), np.uint8)
    changed[0, :] = 255
    path = tmp_path / sid / "masks" / "nucleus0.png"
    st = path.stat()
    Image.fromarray(changed, "L").save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = ds[0]["mask"][0].numpy()
    other = np.asarray(Image.open(tmp_path / sid / "masks" / "nucleus1.png")) > 0
    np.testing.assert_array_equal(after, ((changed > 0) | other).astype(np.float32))
    assert not torch.equal(before, ds[0]["mask"])


def test_dsb_mask_cache_on_disk_is_shared_and_invalidated(tmp_path, monkeypatch):
    write_dsb_kaggle(tmp_path / "d", n=3)
    cache = tmp_path / "cache"
    ref = DSB2018(tmp_path / "d", split="all", size=None, cache_dir=cache)
    expected = [ref[i]["mask"] for i in range(3)]
    assert len(list(cache.glob("*.npz"))) == 3
    reads = _CountingReads(monkeypatch)
    fresh = DSB2018(tmp_path / "d", split="all", size=None, cache_dir=cache)  # e.g. another worker or run
    for i in range(3):
        torch.testing.assert_close(fresh[i]["mask"], expected[i])
    assert reads.masks() == 0
    (tmp_path / "d" / fresh.ids[1] / "masks" / "nucleus1.png").unlink()  # a nucleus removed: new key
    rescan = DSB2018(tmp_path / "d", split="all", size=None, cache_dir=cache)
    rescan[1]
    assert reads.masks() == 1
    (cache / next(p.name for p in cache.glob(f"{fresh.ids[2]}-*.npz"))).write_bytes(b"broken")
    torch.testing.assert_close(DSB2018(tmp_path / "d", split="all", size=None, cache_dir=cache)[2]["mask"], expected[2])
