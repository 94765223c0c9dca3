"""Writers of tiny data sets in the real on-disk layouts (Pillow and nibabel)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def write_dsb_kaggle(root: Path, n: int = 5, h: int = 10, w: int = 12, seed: int = 0) -> dict:
    """``<root>/<id>/images/<id>.png`` (RGBA) and one PNG per nucleus; returns {id: (rgb, mask)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        sid = f"{i:02d}abcdef{i}"
        (root / sid / "images").mkdir(parents=True)
        (root / sid / "masks").mkdir()
        rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        Image.fromarray(rgba, "RGBA").save(root / sid / "images" / f"{sid}.png")
        union = np.zeros((h, w), bool)
        for k in range(2):  # two nuclei, one mask file each
            m = np.zeros((h, w), np.uint8)
            r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
            m[r : r + 3, c : c + 3] = 255
            union |= m > 0
            Image.fromarray(m, "L").save(root / sid / "masks" / f"nucleus{k}.png")
        truth[sid] = (rgba[..., :3], union)
    return truth


def write_dsb_preprocessed(root: Path, n: int = 4, h: int = 10, w: int = 12, seed: int = 0) -> dict:
    """``<root>/images/<id>.png`` and ``<root>/masks/0/<id>.png``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks" / "0").mkdir(parents=True)
    truth = {}
    for i in range(n):
        sid = f"img{i}"
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        m = (rng.random((h, w)) > 0.7).astype(np.uint8) * 255
        Image.fromarray(rgb, "RGB").save(root / "images" / f"{sid}.png")
        Image.fromarray(m, "L").save(root / "masks" / "0" / f"{sid}.png")
        truth[sid] = (rgb, m > 0)
    return truth


def write_cvc(root: Path, n: int = 6, ext: str = ".tif", h: int = 9, w: int = 12, seed: int = 0) -> dict:
    """``<root>/Original/<n>.tif`` and ``<root>/Ground Truth/<n>.tif`` (frames 1..n)."""
    rng = np.random.default_rng(seed)
    (root / "Original").mkdir(parents=True)
    (root / "Ground Truth").mkdir(parents=True)
    truth = {}
    for i in range(1, n + 1):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        m = np.zeros((h, w), np.uint8)
        m[2:6, 3 : 3 + i % 5 + 2] = 255
        Image.fromarray(rgb, "RGB").save(root / "Original" / f"{i}{ext}")
        Image.fromarray(m, "L").save(root / "Ground Truth" / f"{i}{ext}")
        truth[str(i)] = (rgb, m > 0)
    return truth


def write_nifti(path: Path, data: np.ndarray, zooms=(0.7, 0.8, 2.5)) -> None:
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def ct_volume(seed: int, shape=(8, 8, 4), labels=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """A tiny HU volume and a label volume that uses every label in ``labels``."""
    rng = np.random.default_rng(seed)
    hu = rng.uniform(-1200, 1200, shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    for k, v in enumerate(labels[1:]):
        lab[1 + k : 3 + k, 2:5, 1 + (k % (shape[2] - 1))] = v
    return hu, lab


def write_lits(root: Path, n: int = 3, shape=(8, 8, 4)) -> dict:
    """``volume-<n>.nii[.gz]`` / ``segmentation-<n>.nii[.gz]`` in two batch folders."""
    truth = {}
    for i in range(n):
        folder = root / ("Training Batch 1" if i < 2 else "Training Batch 2")
        folder.mkdir(parents=True, exist_ok=True)
        ext = ".nii" if i % 2 == 0 else ".nii.gz"
        hu, lab = ct_volume(i, shape)
        write_nifti(folder / f"volume-{i}{ext}", hu)
        write_nifti(folder / f"segmentation-{i}{ext}", lab)
        truth[f"volume-{i}"] = (hu, lab)
    return truth


def write_segthor(root: Path, n: int = 3, shape=(8, 8, 4)) -> dict:
    """``Patient_<nn>/Patient_<nn>.nii.gz`` and ``Patient_<nn>/GT.nii.gz``."""
    truth = {}
    for i in range(1, n + 1):
        name = f"Patient_{i:02d}"
        (root / name).mkdir(parents=True)
        hu, lab = ct_volume(10 + i, shape, labels=(0, 1, 2, 3, 4))
        write_nifti(root / name / f"{name}.nii.gz", hu, zooms=(0.9, 0.9, 2.0))
        write_nifti(root / name / "GT.nii.gz", lab, zooms=(0.9, 0.9, 2.0))
        truth[name] = (hu, lab)
    return truth


def write_nifti_affine(path: Path, data: np.ndarray, affine: np.ndarray, oriented: bool = True) -> None:
    """Write ``data`` with a full voxel-to-world ``affine``; ``oriented=False`` stores no qform/sform."""
    img = nib.Nifti1Image(data, affine)
    if not oriented:
        img.header.set_sform(None, code=0)
        img.header.set_qform(None, code=0)
        img = nib.Nifti1Image(data, None, img.header)
    nib.save(img, str(path))


def reoriented(data: np.ndarray, affine: np.ndarray, ornt: list) -> tuple[np.ndarray, np.ndarray]:
    """``data`` stored with its axes permuted / flipped by the nibabel ``ornt`` transform, and the
    affine that keeps every voxel at the same place in world space."""
    img = nib.Nifti1Image(data, affine).as_reoriented(np.asarray(ornt))
    return np.asarray(img.dataobj), img.affine


def write_msd_liver(root: Path, n: int = 3, shape=(8, 8, 4), n_test: int = 2, junk: bool = True) -> dict:
    """Medical Segmentation Decathlon ``Task03_Liver``: ``imagesTr/liver_<n>.nii.gz`` with
    ``labelsTr/liver_<n>.nii.gz``, unlabelled ``imagesTs/``, ``dataset.json`` and, as in the
    published archive, macOS ``._liver_<n>.nii.gz`` resource-fork files that are not NIfTI."""
    import json

    task = root / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    truth = {}
    for i in range(n):
        hu, lab = ct_volume(20 + i, shape)
        write_nifti(task / "imagesTr" / f"liver_{i}.nii.gz", hu)
        write_nifti(task / "labelsTr" / f"liver_{i}.nii.gz", lab)
        truth[f"liver_{i}"] = (hu, lab)
        if junk:
            for sub in ("imagesTr", "labelsTr"):
                (task / sub / f"._liver_{i}.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X        junk")
    for i in range(n, n + n_test):
        write_nifti(task / "imagesTs" / f"liver_{i}.nii.gz", ct_volume(20 + i, shape)[0])
        if junk:
            (task / "imagesTs" / f"._liver_{i}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Liver",
                "labels": {"0": "background", "1": "liver", "2": "cancer"},
                "numTraining": n,
                "numTest": n_test,
                "training": [
                    {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                    for i in range(n)
                ],
                "test": [f"./imagesTs/liver_{i}.nii.gz" for i in range(n, n + n_test)],
            }
        )
    )
    return truth


def write_cvc_mirror(root: Path, n: int = 6, frames_per_sequence: int = 2, seed: int = 0) -> dict:
    """The common CVC-ClinicDB mirror (e.g. Kaggle): ``PNG/`` and ``TIF/`` editions, each with
    ``Original/`` and ``Ground Truth/``, and ``metadata.csv`` with ``frame_id, sequence_id`` and paths."""
    truth = write_cvc(root / "TIF", n=n, ext=".tif", seed=seed)
    write_cvc(root / "PNG", n=n, ext=".png", seed=seed)
    lines = ["frame_id,sequence_id,png_image_path,png_mask_path,tif_image_path,tif_mask_path"]
    for i in range(1, n + 1):
        seq = (i - 1) // frames_per_sequence + 1
        lines.append(
            f"{i},{seq},PNG/Original/{i}.png,PNG/Ground Truth/{i}.png,TIF/Original/{i}.tif,TIF/Ground Truth/{i}.tif"
        )
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return truth
