import pandas as pd
import pytest
import tifffile

from conftest import disks
from rfseg.blocks import io
from rfseg.blocks.particles import label_particles
from rfseg.errors import UserError
from rfseg.stages.predict import predict


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
    assert summary["particles"].item() >= label_particles(truth).max()
    assert {"min_area_px2", "holes_filled", "touching_split"} <= set(parts.columns)
    assert "1st-percentile" in summary["filter"].item() and summary["dropped_small"].item() >= 0
    mask = tifffile.imread(tmp_path / "out/a_mask.tif") > 0
    # the toy networks over-segment, but the mask is on the particles (an inverted or shifted mask scores ~0)
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.45 and (mask & truth).sum() > 0.9 * truth.sum()
    everything = predict(toy_models, [tmp_path / "a.tif"], tmp_path / "all", keep_all=True)
    assert everything["particles"].item() > summary["particles"].item() and everything["min_area_px2"].item() == 0
    assert everything["particles"].item() - summary["particles"].item() == summary["dropped_small"].item()
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




def test_predict_tells_the_predictor_the_job_size(toy_models, tmp_path, monkeypatch):
    """``--compile auto`` can only compile at a job's first micrograph if the predictor knows how many will follow."""
    import rfseg.stages.predict as stage

    seen = []

    class Recording(stage.Predictor):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("job_micrographs"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stage, "Predictor", Recording)
    for name in ("a", "b", "c"):
        io.write_tiff(tmp_path / f"{name}.tif", disks(64)[0], 0.25)
    predict(toy_models[:1], [tmp_path / "*.tif"], tmp_path / "out", compile="off")
    assert seen == [3]
