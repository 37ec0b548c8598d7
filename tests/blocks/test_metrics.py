import numpy as np
import pandas as pd
import pytest

from rfseg.blocks.metrics import dice_per_patch, particle_recovery, pooled_scores
from rfseg.blocks.stats import aggregate


def test_metrics_hand_computed():
    t = np.zeros((2, 4, 4), bool)
    t[0, :2, :2] = True  # 4 px
    p = np.zeros_like(t)
    p[0, :2, :1] = True  # 2 px, both right
    d = dice_per_patch(p, t)
    assert d[0] == pytest.approx((2 * 2 + 1) / (2 + 4 + 1))
    assert d[1] == 1.0  # empty prediction of an empty patch: perfect with smoothing
    s = pooled_scores(p, t)
    assert s["global_dice"] == pytest.approx(4 / 6) and s["precision"] == 1 and s["recall"] == 0.5
    assert s["iou"] == pytest.approx(0.5)
    assert pooled_scores(np.zeros(4, bool), np.zeros(4, bool))["global_dice"] == 1.0
    soft = dice_per_patch(np.full((1, 2, 2), 0.5), np.ones((1, 2, 2)))
    assert soft[0] == pytest.approx((2 * 2 + 1) / (2 + 4 + 1))
    rec = particle_recovery(p, t, pixel_size_nm=0.5)
    assert len(rec) == 1 and rec[0]["recovered_fraction"] == 0.5
    assert rec[0]["diameter_nm"] == pytest.approx(np.sqrt(16 / np.pi) * 0.5)


def test_aggregate_mean_std():
    rows = pd.DataFrame([
        {"dataset": "d", "method": "unet", "arch": "n2_p22", "blocks": 2, "rf_px": 44, "hard_dice": v,
         "soft_dice": v, "global_dice": v, "iou": v, "precision": v, "recall": v, "seed": s}
        for s, v in [(1, 0.8), (2, 0.9)]])
    agg = aggregate(rows)
    assert agg["hard_dice_mean"].item() == pytest.approx(0.85)
    assert agg["hard_dice_std"].item() == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert agg["n_seeds"].item() == 2


def test_calibration_error_is_small_for_calibrated_and_large_for_overconfident_probabilities():
    from rfseg.blocks.metrics import calibration_error

    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    truth = rng.random(p.size) < p  # a share p of the pixels given p is particle
    assert calibration_error(p, truth) < 0.01
    assert calibration_error(np.where(p > 0.5, 1.0, 0.0), truth) == pytest.approx(0.25, abs=0.01)
    assert calibration_error(np.full(p.size, 0.5), truth) == pytest.approx(0.0, abs=0.01)
    assert calibration_error(np.ones(4), np.array([1, 1, 0, 0])) == 0.5
