import numpy as np
import pandas as pd
import pytest

from rfseg.blocks import artifacts, io
from rfseg.errors import UserError
from rfseg.stages.patches import make_patches
from rfseg.stages.preprocess import preprocess


def _toy_dataset(root, n=4, size=64):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = rng.normal(100, 10, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        mask[8:30, 8:30] = 1
        img[mask == 1] -= 30
        io.write_tiff(root / f"im{i}.tif", img)
        io.write_tiff(root / f"im{i}_m.tif", mask)
        rows.append({"image": f"im{i}.tif", "mask": f"im{i}_m.tif", "pixel_size_nm": 0.1})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_dataset_preprocess_and_patches(tmp_path):
    man = _toy_dataset(tmp_path)
    df = preprocess(tmp_path / "pre", manifest=man)
    assert len(df) == 4 and (tmp_path / "pre/im0.tif").exists()
    assert io.read_image(tmp_path / "pre/im0.tif").pixel_size_nm == pytest.approx(0.1)
    summary = make_patches(tmp_path / "pre", tmp_path / "patches", patch_size_px=32, min_particle_px=10)
    idx = pd.read_csv(tmp_path / "patches/index.csv")
    assert idx.groupby("group")["split"].nunique().max() == 1  # no micrograph in two splits
    assert summary["splits"]["train"]["patches"] == (idx.split == "train").sum()
    imgs, masks = artifacts.load_split(tmp_path / "patches", "train")
    assert imgs.shape[1:] == (32, 32) and imgs.dtype == np.float32 and masks.max() == 1


def test_dataset_errors_leave_no_output(tmp_path):
    man = _toy_dataset(tmp_path)
    df = io.read_manifest(man)
    df.loc[2, "mask"] = str(tmp_path / "missing.tif")
    with pytest.raises(UserError, match="missing.tif"):
        preprocess(tmp_path / "pre", manifest=df)
    assert not (tmp_path / "pre").exists() and not list(tmp_path.glob(".pre*"))
    df = io.read_manifest(man).drop(columns="pixel_size_nm")
    with pytest.raises(UserError, match="has no pixel size: give the pixel size"):
        preprocess(tmp_path / "pre", manifest=df)
    preprocess(tmp_path / "pre", manifest=man)
    with pytest.raises(UserError, match="smaller than the patch size"):
        make_patches(tmp_path / "pre", tmp_path / "p", patch_size_px=128, min_particle_px=1)
    with pytest.raises(UserError, match="no patch has more than"):
        make_patches(tmp_path / "pre", tmp_path / "p", patch_size_px=32, min_particle_px=10**6)
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_real_dataset_splits_without_leakage(tmp_path):
    from support import ROOT

    real = ROOT / "resources/real-tem-seg"
    preprocess(tmp_path / "pre", images=f"{real}/images/*.tif", masks=f"{real}/masks/{{stem}}.tif",
               pixel_size_nm=1.0)
    summary = make_patches(tmp_path / "pre", tmp_path / "p", patch_size_px=256, min_particle_px=400)
    idx = pd.read_csv(tmp_path / "p/index.csv")
    assert idx.groupby("source_image")["split"].nunique().max() == 1
    assert set(idx.split) == {"train", "val", "test"}
    assert summary["n_images"] == 8


def test_simulate_field_too_small_is_a_clear_error(cli, tmp_path):
    proc = cli("simulate", "lowres", "--n-images", 3, "--seed", 1, "--size", 128, "--out", tmp_path / "s")
    assert proc.returncode == 2 and "cannot hold particles" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()
    proc = cli("simulate", "lowres", "--n-images", 3, "--seed", 1, "--size", 256, "--out", tmp_path / "s")
    assert proc.returncode == 0 and len(list((tmp_path / "s/images").glob("*.tif"))) == 3
