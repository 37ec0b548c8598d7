import time

import numpy as np
import pandas as pd
import pytest
import torch

from rfseg import data, io
from rfseg.errors import UserError
from rfseg.patches import dihedral, dihedral_batch, dihedral_inverse, kfold_groups, split_groups, tile
from rfseg.preprocess import flat_field, remove_xrays, resample, standardise


def test_remove_xrays_replaces_hot_pixels_with_neighbour_mean():
    img = np.full((16, 16), 100.0, np.float32)
    img[5, 5] = 5000
    img[5, 6] = 4000  # a 2-px hit: the second pass catches what the first leaves
    out = remove_xrays(img, threshold=1500, passes=2)
    assert out.max() < 1600 and out[0, 0] == 100
    assert img[5, 5] == 5000  # input untouched
    one = remove_xrays(np.pad(np.array([[9.0]]), 1, constant_values=1.0), threshold=5, passes=1)
    assert one[1, 1] == pytest.approx(1.0)


def test_remove_xrays_4096_is_fast():
    img = np.random.default_rng(0).normal(100, 5, (4096, 4096)).astype(np.float32)
    t = time.perf_counter()
    remove_xrays(img, 1500)
    assert time.perf_counter() - t < 5  # generous bound; the benchmark measures the real figure


def test_standardise_and_flat_field():
    rng = np.random.default_rng(1)
    img = rng.random((64, 64)).astype(np.float32) * 10 + 3
    s = standardise(img)
    assert abs(s.mean()) < 1e-5 and s.std() == pytest.approx(1, abs=1e-5)
    ramp = np.linspace(1, 3, 128)[None, :] * np.ones((128, 1))
    flat = flat_field(ramp, 20)
    assert flat.std() / flat.mean() < 0.25 * ramp.std() / ramp.mean()  # relative variation cut 4x
    with pytest.raises(UserError, match="constant"):
        standardise(np.ones((4, 4)))


def test_resample_to_target_pixel_size():
    img = np.random.default_rng(2).random((100, 50)).astype(np.float32)
    out = resample(img, (0.1, 0.2), 0.2)
    assert out.shape == (50, 50)
    mask = resample(np.ones((100, 50), bool), (0.1, 0.2), 0.2, is_mask=True)
    assert mask.dtype == bool and mask.all()


def test_tile_positions():
    img = np.arange(10 * 12).reshape(10, 12)
    t, pos = tile(img, 4)
    assert t.shape == (6, 4, 4) and pos == [(0, 0), (0, 4), (0, 8), (4, 0), (4, 4), (4, 8)]
    assert np.array_equal(t[4], img[4:8, 4:8])


def test_split_groups_fractions_and_minimum():
    groups = [f"g{i}" for i in range(8)]
    s = split_groups(groups, [10] * 8)
    assert [s[g] for g in groups] == ["train"] * 6 + ["val", "test"]
    s = split_groups(groups[:3], [100, 1, 1])
    assert sorted(s.values()) == ["test", "train", "val"]
    s = split_groups([f"g{i}" for i in range(20)], [5] * 20)
    assert list(s.values()).count("train") == 14 and list(s.values()).count("val") == 2
    with pytest.raises(UserError, match="at least 3"):
        split_groups(["a", "b"], [1, 1])


def test_kfold_covers_every_group_once_as_test():
    groups = [f"g{i}" for i in range(7)]
    tests = [g for k in range(3) for g, s in kfold_groups(groups, 3, k).items() if s == "test"]
    assert sorted(tests) == sorted(groups)


def test_dihedral_group():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    for k in range(8):
        assert torch.equal(dihedral_inverse(dihedral(x, k), k), x)
    ks = torch.tensor([3, 5])
    b = dihedral_batch(x, ks)
    assert torch.equal(b[0], dihedral(x[0], 3)) and torch.equal(b[1], dihedral(x[1], 5))


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
    df = data.preprocess_dataset(data.read_manifest(man), tmp_path / "pre")
    assert len(df) == 4 and (tmp_path / "pre/im0.tif").exists()
    assert io.read_image(tmp_path / "pre/im0.tif").pixel_size == pytest.approx(0.1)
    summary = data.make_patches(tmp_path / "pre", tmp_path / "patches", size=32, min_particle_px=10)
    idx = pd.read_csv(tmp_path / "patches/index.csv")
    assert idx.groupby("group")["split"].nunique().max() == 1  # no micrograph in two splits
    assert summary["splits"]["train"]["patches"] == (idx.split == "train").sum()
    imgs, masks = data.load_split(tmp_path / "patches", "train")
    assert imgs.shape[1:] == (32, 32) and imgs.dtype == np.float32 and masks.max() == 1


def test_dataset_errors_leave_no_output(tmp_path):
    man = _toy_dataset(tmp_path)
    df = data.read_manifest(man)
    df.loc[2, "mask"] = str(tmp_path / "missing.tif")
    with pytest.raises(UserError, match="missing.tif"):
        data.preprocess_dataset(df, tmp_path / "pre")
    assert not (tmp_path / "pre").exists() and not list(tmp_path.glob(".pre*"))
    df = data.read_manifest(man).drop(columns="pixel_size_nm")
    with pytest.raises(UserError, match="has no pixel size: set pixel_size_nm"):
        data.preprocess_dataset(df, tmp_path / "pre")
    data.preprocess_dataset(data.read_manifest(man), tmp_path / "pre")
    with pytest.raises(UserError, match="smaller than the patch size"):
        data.make_patches(tmp_path / "pre", tmp_path / "p", size=128, min_particle_px=1)
    with pytest.raises(UserError, match="no patch has more than"):
        data.make_patches(tmp_path / "pre", tmp_path / "p", size=32, min_particle_px=10**6)
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_real_dataset_splits_without_leakage(tmp_path):
    from conftest import ROOT

    real = ROOT / "resources/real-tem-seg"
    man = data.manifest_from_glob(f"{real}/images/*.tif", f"{real}/masks/{{stem}}.tif")
    data.preprocess_dataset(man, tmp_path / "pre", pixel_size_nm=1.0)
    summary = data.make_patches(tmp_path / "pre", tmp_path / "p", size=256, min_particle_px=400)
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
