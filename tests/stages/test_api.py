"""The Python API (rfseg.load, Model.segment, Segmentation.save) gives what rfseg predict gives, and the outputs
Fiji and napari open: labels matching the particle table, ImageJ ROIs matching its areas."""

import numpy as np
import pandas as pd
import pytest
import tifffile

import rfseg
from rfseg.blocks import io
from rfseg.stages.importer import PRETRAINED


@pytest.fixture(scope="module")
def micrograph(tmp_path_factory):
    from rfseg.stages.simulate import simulate

    root = tmp_path_factory.mktemp("sim")
    simulate("hrtem", root / "sim", n_images=1, seed=3, size=512, pixel_size_nm=0.02, diameter_nm=(4.0, 6.0),
             threads=1)
    return root / "sim/images/hrtem_000.tif"


@pytest.mark.slow
def test_three_lines_of_python_give_what_predict_writes(cli, tmp_path, micrograph):
    result = rfseg.load("au-5nm-423e").segment(micrograph)
    result.save(tmp_path / "py")
    cli("predict", "au-5nm-423e", micrograph, "--out", tmp_path / "cli", check_rc=0)
    for name in ("hrtem_000_particles.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "py" / name), pd.read_csv(tmp_path / "cli" / name))
    for name in ("hrtem_000_prob.tif", "hrtem_000_labels.tif", "hrtem_000_uncertainty.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "py" / name), tifffile.imread(tmp_path / "cli" / name))
    assert result.uncertainty.shape == result.probability.shape == result.labels.shape == (512, 512)
    assert result.pixel_size_nm == pytest.approx(0.02) and len(result.particles) > 0


def test_labels_and_rois_match_the_particle_table(cli, tmp_path, toy_models):
    import roifile

    from conftest import disks

    image, _ = disks(128)
    io.write_tiff(tmp_path / "d.tif", image, 0.25)
    cli("predict", toy_models[0], tmp_path / "d.tif", "--out", tmp_path / "o", check_rc=0)
    table = pd.read_csv(tmp_path / "o/d_particles.csv")
    labels = tifffile.imread(tmp_path / "o/d_labels.tif")
    assert labels.dtype == np.uint16 and len(table) > 0
    assert set(np.unique(labels[labels > 0])) == set(table["label"])
    for row in table.itertuples():
        assert (labels == row.label).sum() == row.area_px2
    with tifffile.TiffFile(tmp_path / "o/d_labels.tif") as tif:
        assert tif.imagej_metadata["unit"] == "nm"
    rois = {r.name: r for r in roifile.roiread(tmp_path / "o/d_rois.zip")}
    assert set(rois) == {str(k) for k in table["label"]}
    for row in table.itertuples():
        xy = rois[str(row.label)].coordinates()
        area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        assert area == pytest.approx(row.area_px2, rel=0.03, abs=1.0), row.label


def test_arrays_files_and_names(tmp_path, toy_models):
    model = rfseg.load(toy_models)  # bundle folders: an ensemble of two
    assert len(model) == 2 and model.pixel_size_nm == 0.25
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    result = model.segment(image, pixel_size_nm=0.25)
    assert result.uncertainty is not None and result.mask.dtype == bool
    with pytest.raises(rfseg.UserError, match="no pixel size but the model was trained at 0.25 nm/px"):
        model.segment(image)
    with pytest.raises(rfseg.UserError, match="give a 2-D micrograph"):
        model.segment(np.zeros((2, 64, 64)), pixel_size_nm=0.25)
    with pytest.raises(rfseg.UserError, match="neither a shipped model"):
        rfseg.load("au-9nm-000e")
    assert set(rfseg.models()["name"]) >= {"au-5nm-423e", "au-2.2nm-423e"}
    assert rfseg.arch("n2_p44", 0.02)["rf_nm"] == pytest.approx(2.4)
    data, px = rfseg.read_micrograph(io.write_tiff(tmp_path / "a.tif", image, 0.5) or tmp_path / "a.tif")
    assert data.shape == (64, 64) and px == 0.5


def test_predict_takes_shipped_names_and_ensemble_folders(cli, tmp_path):
    image = np.random.default_rng(0).normal(100, 5, (256, 256)).astype(np.float32)
    io.write_tiff(tmp_path / "m.tif", image, 0.02)
    cli("predict", "au-2.2nm-423e", tmp_path / "m.tif", "--out", tmp_path / "by-name", check_rc=0)
    cli("predict", PRETRAINED / "au-2.2nm-423e", tmp_path / "m.tif", "--out", tmp_path / "by-folder", check_rc=0)
    a, b = (pd.read_csv(tmp_path / d / "summary.csv") for d in ("by-name", "by-folder"))
    assert (a["models"] == 1).all() and a["particles"].equals(b["particles"])


def test_every_public_name_is_documented_with_units_or_shapes():
    import inspect

    assert "rfseg.load" in rfseg.__doc__ and "Model.segment" in rfseg.__doc__
    for name in ("load", "Model", "read_micrograph", "models", "arch", "Segmentation"):
        doc = inspect.getdoc(getattr(rfseg, name)) or ""
        assert len(doc) > 80 and any(u in doc for u in ("nm", "rows, cols", "px")), name
    doc = inspect.getdoc(rfseg.Model.segment)
    assert "Returns" in doc and "Raises" in doc


def _chromium() -> str:
    """Debian's Chromium, installed with apt-get as the SLURM test installs its tools; skips where impossible."""
    import os
    import shutil
    import subprocess

    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a headless browser needs Debian's chromium: root and apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode:
            pytest.skip("apt-get could not install chromium here")
    return shutil.which("chromium")


@pytest.mark.slow
def test_the_run_page_renders_in_a_real_browser(cli, tmp_path, toy_models):
    """index.html opened by headless Chromium: every image (the overlays and the size histogram) decodes and the
    summary table is there."""
    import re
    import subprocess

    from conftest import disks

    for i in range(2):
        io.write_tiff(tmp_path / f"d{i}.tif", disks(128, seed=i)[0], 0.25)
    cli("predict", *toy_models, tmp_path / "d0.tif", tmp_path / "d1.tif", "--out", tmp_path / "o", check_rc=0)
    browser = _chromium()
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           (tmp_path / "o/index.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r'data-images-loaded="3 of 3"', proc.stdout), proc.stdout[:500]
    assert "<table" in proc.stdout and "d0.tif" in proc.stdout and "d1.tif" in proc.stdout
