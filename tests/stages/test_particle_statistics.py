"""Particle statistics on real micrographs: the default post-processing gives the hand labels' counts and sizes."""

import numpy as np
import pandas as pd
import pytest

from rfseg.blocks import io
from rfseg.blocks.particles import label_particles, particle_table
from rfseg.stages.patches import make_patches
from rfseg.stages.predict import predict
from rfseg.stages.preprocess import preprocess
from rfseg.stages.train import TrainConfig, train
from support import ROOT, THREADS

REAL = ROOT / "resources/real-tem-seg"


@pytest.mark.slow
def test_default_particle_table_matches_hand_labels_on_unseen_real_micrographs(tmp_path):
    """k-fold over the shipped real micrographs: train on six, predict the two held out, for two folds."""
    preprocess(tmp_path / "pre", images=f"{REAL}/images/*.tif", masks=f"{REAL}/masks/{{stem}}.tif",
               uncalibrated=True)
    counts, diameters, dropped = [], [], []
    for fold in (0, 2):
        make_patches(tmp_path / "pre", tmp_path / f"p{fold}", patch_size_px=256, folds=4, fold=fold)
        index = pd.read_csv(tmp_path / f"p{fold}/index.csv")
        tests = sorted(index.loc[index["split"] == "test", "source_image"].unique())
        cfg = TrainConfig(epochs=20, batch_size=4, lr=3e-3, augment="random8")  # the sweep tutorial's quick recipe
        meta = train(tmp_path / f"p{fold}", tmp_path / f"m{fold}", "n2_p22", 752, cfg, threads=THREADS)
        assert meta["training_particles"]["n"] > 20 and meta["training_particles"]["area_px2_p1"] > 10
        summary = predict([tmp_path / f"m{fold}"], tests, tmp_path / f"seg{fold}", threads=THREADS)
        assert summary["filter"].str.contains("1st-percentile").all() and (summary["min_area_px2"] > 0).all()
        for image in tests:
            stem = image.rsplit("/", 1)[1].removesuffix(".tif")
            truth = io.read_mask(REAL / "masks" / f"{stem}.tif")
            true = particle_table(label_particles(truth), truth.astype(np.float32), None)
            pred = pd.read_csv(tmp_path / f"seg{fold}/{stem}_particles.csv")
            counts.append((len(pred), len(true)))
            diameters.append((pred["equivalent_diameter_px"], true["equivalent_diameter_px"]))
        dropped += list(summary["dropped_small"])
    n_pred, n_true = map(sum, zip(*counts))
    d_pred = np.median(np.concatenate([d for d, _ in diameters]))
    d_true = np.median(np.concatenate([d for _, d in diameters]))
    assert abs(n_pred / n_true - 1) <= 0.10, counts
    assert abs(d_pred / d_true - 1) <= 0.05, (d_pred, d_true)
    assert (n_pred + sum(dropped)) / n_true - 1 > 0.10, dropped  # without the filter the count would be off
