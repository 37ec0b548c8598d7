import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from helpers import make_patch_dir
from rfseg import io
from rfseg.errors import UserError
from rfseg.models import ArchSpec
from rfseg.predict import (class_probability, gaussian_weight, inference_precision, particle_table, predict,
                           sliding_window_probability, tile_starts)
from rfseg.train import TrainConfig, load_model, train


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    patches = make_patch_dir(root / "p", n=(24, 4, 4), size=64, pixel_size_nm=0.25)
    cfg = TrainConfig(epochs=20, batch_size=8, lr=3e-3, augment="random8", precision="fp32")
    return [train(patches, root / f"m{s}", ArchSpec(2, (2, 2)), s, cfg) and root / f"m{s}" for s in (1, 2)]


def _disks(size=256, px=0.25, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for cy, cx in [(40, 40), (40, 200), (128, 128), (210, 60), (200, 200)]:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 6**2
    return (rng.normal(0, 0.5, (size, size)) + 1.5 * mask).astype(np.float32), mask


def test_tile_geometry():
    assert tile_starts(100, 64, 32) == [0, 32, 36]
    assert tile_starts(64, 64, 32) == [0]
    w = gaussian_weight(64)
    assert w.max() == 1 and w.min() > 0 and w[32, 32] > w[0, 0]


def test_single_tile_equals_whole_image_inference(toy_models):
    model, _ = load_model(toy_models[0])
    image, _ = _disks(96)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0, 1].numpy()
    tiled = sliding_window_probability(model, image, tile=96)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_overlapping_tiles_leave_no_seams(toy_models):
    model, _ = load_model(toy_models[0])
    image, truth = _disks(256)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0, 1].numpy()
    tiled = sliding_window_probability(model, image, tile=64, overlap=0.5)
    # agreement with a whole-image pass, also on the tile borders (every 32 px) where seams would show
    borders = np.zeros_like(truth)
    borders[::32, :] = borders[:, ::32] = True
    assert np.abs(tiled - whole).mean() < 0.02
    assert np.abs(tiled - whole)[borders].mean() < 0.03
    pred = tiled > 0.5
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8


def test_auto_precision_is_bf16_on_cpu_and_fp32_on_gpu():
    assert inference_precision("auto", torch.device("cuda")) == "fp32"
    assert inference_precision("auto", torch.device("cpu")) == "auto"
    assert inference_precision("bf16", torch.device("cuda")) == "bf16"
    assert inference_precision("fp32", torch.device("cpu")) == "fp32"


def test_particle_table_on_known_disks():
    yy, xx = np.mgrid[0:200, 0:200]
    mask = ((yy - 50) ** 2 + (xx - 60) ** 2 < 20**2) | ((yy - 150) ** 2 + (xx - 140) ** 2 < 10**2)
    table, labels = particle_table(mask, mask.astype(np.float32), pixel_size_nm=0.5)
    assert len(table) == 2
    big = table.loc[table["area_nm2"].idxmax()]
    assert big["centroid_y_nm"] == pytest.approx(25.0) and big["centroid_x_nm"] == pytest.approx(30.0)
    assert big["equivalent_diameter_nm"] == pytest.approx(20.0, rel=0.02)
    assert big["area_nm2"] == pytest.approx(np.pi * 10**2, rel=0.03)
    assert big["eccentricity"] < 0.1 and big["mean_probability"] == 1.0
    small_dropped, _ = particle_table(mask, mask.astype(np.float32), 0.5, min_area_nm2=100)
    assert len(small_dropped) == 1
    edge = mask.copy()
    edge[:5, :5] = True
    assert len(particle_table(edge, edge.astype(np.float32), 0.5, drop_border=True)[0]) == 2


def test_predict_writes_everything_and_ensembles(toy_models, tmp_path):
    image, truth = _disks(300)
    io.write_tiff(tmp_path / "a.tif", image, 0.25)
    summary = predict(toy_models, [tmp_path / "*.tif"], tmp_path / "out", progress=False)
    for suffix in ["prob", "mask", "uncertainty"]:
        f = tmp_path / f"out/a_{suffix}.tif"
        assert io.read_image(f).pixel_size == pytest.approx(0.25)
    assert tifffile.imread(tmp_path / "out/a_prob.tif").shape == (300, 300)
    parts = pd.read_csv(tmp_path / "out/a_particles.csv")
    assert "equivalent_diameter_nm" in parts and summary["models"].item() == 2
    single = predict(toy_models[:1], [tmp_path / "a.tif"], tmp_path / "one", progress=False)
    assert not (tmp_path / "one/a_uncertainty.tif").exists() and single["particles"].item() >= 1


def test_predict_formats_and_pixel_mismatch(toy_models, tmp_path, formats_dir):
    out = predict(toy_models[:1], [formats_dir / "test_STEM_image.dm3"], tmp_path / "dm3", progress=False)
    assert out["pixel_size_nm"].item() == pytest.approx(0.24853801, rel=1e-6)
    assert tifffile.imread(tmp_path / "dm3/test_STEM_image_prob.tif").shape == (68, 68)
    # 0.0122 nm/px against a model at 0.25 nm/px: resampled for inference, results on the file's own grid
    out = predict(toy_models[:1], [formats_dir / "Acquisition_18.emd"], tmp_path / "emd", progress=False)
    assert tifffile.imread(tmp_path / "emd/Acquisition_18_mask.tif").shape == (1024, 1024)
    with pytest.raises(UserError, match="trained at 0.25 nm/px"):
        predict(toy_models[:1], [formats_dir / "Acquisition_18.emd"], tmp_path / "x", on_pixel_mismatch="refuse",
                progress=False)


def test_predict_cli_errors(cli, tmp_path, toy_models):
    proc = cli("predict", tmp_path / "nothing.tif", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "no model given" in proc.stderr
    proc = cli("predict", toy_models[0], tmp_path / "missing_*.tif", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "matches no file" in proc.stderr


@pytest.mark.slow
def test_compiled_model_predicts_like_the_plain_one(toy_models):
    from rfseg.predict import compiled

    model, _ = load_model(toy_models[0])
    image, _ = _disks(256)
    plain = sliding_window_probability(model, image, tile=128, overlap=0.25)
    fast = sliding_window_probability(compiled(model), image, tile=128, overlap=0.25)
    np.testing.assert_allclose(fast, plain, atol=1e-4)


@pytest.mark.parametrize("classes", [2, 3])
def test_class_probability_is_the_softmax(classes):
    logits = torch.randn(2, classes, 8, 8) * 5
    for k in range(classes):
        torch.testing.assert_close(class_probability(logits, k), torch.softmax(logits, 1)[:, k])
