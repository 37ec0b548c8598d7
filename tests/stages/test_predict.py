import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import disks
from rfseg.blocks import io
from rfseg.blocks.particles import drop_labels, label_particles, particle_table
from rfseg.errors import UserError
from rfseg.stages.predict import predict


def test_particle_table_on_knowndisks():
    yy, xx = np.mgrid[0:200, 0:200]
    mask = ((yy - 50) ** 2 + (xx - 60) ** 2 < 20**2) | ((yy - 150) ** 2 + (xx - 140) ** 2 < 10**2)
    labels = label_particles(mask)
    table = particle_table(labels, mask.astype(np.float32), pixel_size_nm=0.5)
    assert len(table) == 2
    big = table.loc[table["area_nm2"].idxmax()]
    assert big["centroid_y_nm"] == pytest.approx(25.0) and big["centroid_x_nm"] == pytest.approx(30.0)
    assert big["equivalent_diameter_nm"] == pytest.approx(20.0, rel=0.02)
    assert big["area_nm2"] == pytest.approx(np.pi * 10**2, rel=0.03)
    assert big["eccentricity"] < 0.1 and big["mean_probability"] == 1.0
    assert big["area_px2"] == pytest.approx(big["area_nm2"] / 0.25) and not table["touches_border"].any()
    kept_labels, kept = drop_labels(labels, table, table["area_nm2"] < 100)
    assert len(kept) == 1 and set(np.unique(kept_labels)) == {0, kept["label"].item()}
    edge = mask.copy()
    edge[:5, :5] = True
    t = particle_table(label_particles(edge), edge.astype(np.float32), 0.5)
    assert t["touches_border"].sum() == 1 and len(t) == 3
    uncalibrated = particle_table(labels, mask.astype(np.float32), None)
    assert uncalibrated["equivalent_diameter_nm"].isna().all() and uncalibrated["area_px2"].equals(table["area_px2"])


def test_predict_writes_everything_and_ensembles(toy_models, tmp_path):
    image, truth = disks(300)
    io.write_tiff(tmp_path / "a.tif", image, 0.25)
    summary = predict(toy_models, [tmp_path / "*.tif"], tmp_path / "out")
    for suffix in ["prob", "mask", "uncertainty"]:
        f = tmp_path / f"out/a_{suffix}.tif"
        assert io.read_image(f).pixel_size_nm == pytest.approx(0.25)
    assert tifffile.imread(tmp_path / "out/a_prob.tif").shape == (300, 300)
    parts = pd.read_csv(tmp_path / "out/a_particles.csv")
    assert "equivalent_diameter_nm" in parts and summary["models"].item() == 2
    single = predict(toy_models[:1], [tmp_path / "a.tif"], tmp_path / "one")
    assert not (tmp_path / "one/a_uncertainty.tif").exists() and single["particles"].item() >= 1


def test_predict_formats_and_pixel_mismatch(toy_models, tmp_path, formats_dir):
    out = predict(toy_models[:1], [formats_dir / "test_STEM_image.dm3"], tmp_path / "dm3")
    assert out["pixel_size_nm"].item() == pytest.approx(0.24853801, rel=1e-6)
    assert tifffile.imread(tmp_path / "dm3/test_STEM_image_prob.tif").shape == (68, 68)
    # 0.0122 nm/px against a model at 0.25 nm/px: resampled for inference, results on the file's own grid
    out = predict(toy_models[:1], [formats_dir / "Acquisition_18.emd"], tmp_path / "emd")
    assert tifffile.imread(tmp_path / "emd/Acquisition_18_mask.tif").shape == (1024, 1024)
    with pytest.raises(UserError, match="trained at 0.25 nm/px"):
        predict(toy_models[:1], [formats_dir / "Acquisition_18.emd"], tmp_path / "x", on_pixel_mismatch="refuse")


def test_predict_cli_errors(cli, tmp_path, toy_models):
    proc = cli("predict", tmp_path / "nothing.tif", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "no model given" in proc.stderr
    proc = cli("predict", toy_models[0], tmp_path / "missing_*.tif", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "matches no file" in proc.stderr


