import json
import math

import numpy as np
import pandas as pd
import pytest

from rfseg.blocks import artifacts
from rfseg.stages.patches import make_patches
from rfseg.stages.preprocess import preprocess
from rfseg.stages.recommend import best_rf, from_fingerprint, from_paired


def _dataset(tmp, name, frames, size):
    artifacts.write_simulated(tmp / name / "raw", frames)
    preprocess(tmp / name / "pre", manifest=tmp / name / "raw/manifest.csv")
    make_patches(tmp / name / "pre", tmp / name / "patches", patch_size_px=size, min_particle_px=50, dataset=name)


@pytest.mark.slow
def test_fingerprints_tell_hrtem_from_lowres(tmp_path, cli):
    from rfseg.blocks.simulate import hrtem, lowres

    # The earlier, idealised HRTEM recipe (README, "Realistic simulated HRTEM"): weak amplitude contrast under strong
    # fringes. The realistic defaults damp the fringes and speckle, so at this dose their particles stand out by
    # darkness about as much as the low-res ones, and only the fringes tell the two kinds apart.
    idealised = {"detector_psf_px": 0.0, "detector_dqe": 1.0, "image_spread_a": 0.0, "defocus_spread_a": 0.0,
                 "astigmatism_a": 0.0, "convergence_mrad": 0.0, "illumination_variation": 0.0, "shapes": ("wulff",),
                 "zone_axis_fraction": 0.5, "touching_fraction": 0.0, "cross_border": False, "n_particles": (2, 4)}
    _dataset(tmp_path, "hrtem", hrtem.simulate_dataset(3, 4, dose_e_per_a2=(2000, 3000), workers=2, **idealised), 256)
    _dataset(tmp_path, "lowres", lowres.simulate_dataset(3, 4), 256)
    fps = {}
    for name in ("hrtem", "lowres"):
        out = tmp_path / f"{name}_fp.csv"
        cli("fingerprint", "--preprocessed", tmp_path / name / "pre", "--patches", tmp_path / name / "patches",
            "--dataset", name, "--out", out, check_rc=0)
        fps[name] = pd.read_csv(out).iloc[0]
    h, lo = fps["hrtem"], fps["lowres"]
    # low-res: strong amplitude contrast; HRTEM: weak (the particles are only slightly darker than the carbon)
    assert lo["abs_amplitude_contrast"] > 2 * h["abs_amplitude_contrast"]
    assert lo["abs_amplitude_contrast"] > 1.0 > h["abs_amplitude_contrast"]
    assert math.isnan(lo["fringe_share"])  # the lattice is not resolved at 0.1243 nm/px
    assert h["fringe_share"] > 0.2  # HRTEM: a clear share of particle area carries fringes
    assert 0 < h["lab_contrast"] < lo["lab_contrast"]  # the published networks' lab's measure agrees on the order
    assert 2 <= h["diameter_median_nm"] <= 6.5 and 12 <= lo["diameter_median_nm"] <= 28
    rec = json.loads(cli("recommend", tmp_path / "lowres_fp.csv", "--json", check_rc=0).stdout)
    assert rec["arch"] == "n2_p22" and "fingerprint" in rec["basis"]
    rec = json.loads(cli("recommend", "hrtem", "--fingerprints", tmp_path / "hrtem_fp.csv", "--json").stdout)
    assert rec == from_fingerprint(h.to_dict()) and rec["reason"]


def test_fingerprint_lab_contrast_of_windows_skips_the_flat_field_and_a_failing_surface_is_named(tmp_path, cli):
    """--published-flat-field none (config: evaluation.published_flat_field) measures the lab contrast without the
    networks' Bézier flat field, as the published networks judge windows; where that surface cannot be fitted (a
    field whose counts reach zero over a band) the default stops with one line naming the micrograph and that key."""
    from rfseg.blocks.measures import lab_contrast

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    image = rng.poisson(20, (128, 128)).astype(float)
    disc = np.hypot(yy - 64, xx - 64) < 20
    image[disc] *= 0.5
    image[:, :40] = 0
    frames = [(f"w_{i:03d}", np.roll(image, 3 * i, axis=0), np.roll(disc, 3 * i, axis=0).astype(np.uint16), 0.02, {})
              for i in range(3)]
    _dataset(tmp_path, "w", frames, 128)
    args = ["fingerprint", "--preprocessed", tmp_path / "w/pre", "--patches", tmp_path / "w/patches", "--dataset",
            "w", "--out"]
    proc = cli(*args, tmp_path / "bundle.csv")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "w_00" in proc.stderr
    assert "evaluation.published_flat_field: none" in proc.stderr and not (tmp_path / "bundle.csv").exists()
    cli(*args, tmp_path / "none.csv", "--published-flat-field", "none", check_rc=0)
    measured = pd.read_csv(tmp_path / "none.csv").iloc[0]["lab_contrast"]
    per_micrograph = [lab_contrast(f[1], f[2] > 0, "none") for f in frames]
    assert measured == pytest.approx(np.median(per_micrograph)) and measured > 0


def test_best_rf_is_smallest_within_one_std():
    s = pd.DataFrame([
        {"dataset": "d", "method": "unet", "arch": a, "rf_px": rf, "rf_nm": rf * 0.1, "params": 8074,
         "hard_dice_mean": m, "hard_dice_std": sd}
        for a, rf, m, sd in [("n2_p22", 44, 0.70, 0.01), ("n2_p44", 120, 0.78, 0.02), ("n2_p88", 392, 0.79, 0.02)]])
    b = best_rf(s, "d")
    assert b["arch"] == "n2_p44" and b["best_arch"] == "n2_p88" and b["basis"] == "measured (one seed std)"


def _paired_rows(ds, gains):
    """Paired rows of one dataset: (arch, rf_px, mean gain, ci low, ci high), at 0.02 nm/px."""
    return [{"dataset": ds, "method": "unet", "arch": a, "rf_px": rf, "rf_nm": rf * 0.02, "params": 8074,
             "reference": "n2_p22", "n_seeds": 2, "n_micrographs": 9, "diff_mean": m, "diff_ci_low": lo,
             "diff_ci_high": hi} for a, rf, m, lo, hi in gains]


@pytest.fixture
def evidence(tmp_path):
    """A measured series of two sets: larger RFs resolved ahead on the low-contrast one, unresolved on the other."""
    folder = tmp_path / "series"
    folder.mkdir()
    pd.DataFrame(_paired_rows("low", [("n2_p22", 44, 0, 0, 0), ("n2_p44", 120, 0.05, 0.03, 0.07),
                                      ("n2_p88", 392, 0.06, 0.04, 0.08)])
                 + _paired_rows("high", [("n2_p22", 44, 0, 0, 0), ("n2_p44", 120, 0.01, -0.01, 0.03),
                                         ("n2_p88", 392, -0.02, -0.05, 0.01)])).to_csv(folder / "paired.csv",
                                                                                         index=False)
    pd.DataFrame([{"dataset": "low", "diameter_median_nm": 5.0, "lab_contrast": 0.2},
                  {"dataset": "high", "diameter_median_nm": 5.0, "lab_contrast": 0.6}]).to_csv(
        folder / "fingerprints.csv", index=False)
    return folder


def test_paired_recommendation_follows_the_intervals(evidence):
    table = pd.read_csv(evidence / "paired.csv")
    low, high = from_paired(table, "low"), from_paired(table, "high")
    assert low["arch"] == "n2_p44" and low["resolved"] and low["best_arch"] == "n2_p88"
    assert "+0.060 [+0.040, +0.080]" in low["reason"]
    assert high["arch"] == "n2_p22" and not high["resolved"] and "includes 0" in high["reason"]


@pytest.mark.parametrize("contrast, lab, diameter, arch, basis", [
    (5.0, 0.9, 20.0, "n2_p22", "agree"),                  # high contrast: the smallest RF
    (0.5, 0.22, 5.5, "n2_p44", "nearest set low"),        # like the set where n2_p44 was resolved ahead
    (1.5, 0.22, 5.5, "n2_p44", "nearest set low"),        # the series' evidence before the contrast rule
    (0.5, 0.55, 4.5, "n2_p22", "nearest set high"),       # like the set where no RF was resolved
    (0.1, 0.05, 5.0, None, "paper's real-data rule"),     # outside the series: the paper
])
def test_fingerprint_rule_follows_the_evidence(evidence, contrast, lab, diameter, arch, basis):
    rec = from_fingerprint({"dataset": "x", "pixel_size_nm": 0.02, "abs_amplitude_contrast": contrast,
                            "lab_contrast": lab, "diameter_median_nm": diameter}, evidence=evidence)
    assert basis in rec["basis"]
    if arch:
        assert rec["arch"] == arch
    else:
        assert rec["rf_nm"] >= 0.9 * 1.7 * diameter and "paper" in rec["reason"]
    without = from_fingerprint({"dataset": "x", "pixel_size_nm": 0.02, "abs_amplitude_contrast": 0.5,
                                "lab_contrast": 0.22, "diameter_median_nm": 5.5}, evidence=None)
    assert "paper's real-data rule" in without["basis"]


def test_recommend_cli_measured_and_unknown(cli, tmp_path):
    s = pd.DataFrame([{"dataset": "d", "method": "unet", "arch": "n2_p22", "rf_px": 44, "rf_nm": 4.4,
                       "params": 8074, "hard_dice_mean": 0.9, "hard_dice_std": 0.01}])
    s.to_csv(tmp_path / "summary.csv", index=False)
    out = cli("recommend", "d", "--results", tmp_path / "summary.csv", check_rc=0).stdout
    assert "use n2_p22 (RF 44 px = 4.4 nm) [measured (one seed std)]" in out
    proc = cli("recommend", "nope", "--results", tmp_path / "summary.csv")
    assert proc.returncode == 2 and "unknown dataset 'nope'" in proc.stderr


def test_lab_contrast_reads_darker_particles_as_positive_and_ignores_slow_illumination():
    import numpy as np

    from rfseg.blocks.measures import lab_contrast

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    mask = (yy - 128) ** 2 + (xx - 128) ** 2 < 40**2
    illumination = (1 + 0.5 * xx / 255) * (1 + 0.2 * (yy / 255) ** 2)  # what the Bézier flat field removes
    strong, weak = (rng.poisson(1000 * (1 - d * mask)).astype(np.float32) for d in (0.3, 0.1))
    assert lab_contrast(strong, mask) > lab_contrast(weak, mask) > 0
    for image in (strong, weak):
        assert abs(lab_contrast(image * illumination, mask) - lab_contrast(image, mask)) < 0.01
    assert lab_contrast(strong, mask) == pytest.approx(-lab_contrast(2000 - strong, mask), abs=0.05)


def test_recommend_cli_reads_paired_files(cli, evidence):
    rec = json.loads(cli("recommend", "low", "--paired", evidence / "paired.csv", "--json", check_rc=0).stdout)
    assert rec["arch"] == "n2_p44" and rec["basis"] == "measured (paired differences)"
    proc = cli("recommend", "low", "--paired", evidence / "missing.csv")
    assert proc.returncode == 2 and "missing.csv: results file not found" in proc.stderr


def test_shipped_series_is_complete_and_answers_for_its_own_sets():
    """resources/series (make series-evidence): every set has a fingerprint and paired rows against its smallest RF,
    and a fingerprint equal to a set's is answered from that set's own intervals."""
    from rfseg.stages.recommend import SERIES, read_evidence

    paired, fps = read_evidence(SERIES)
    assert set(fps["dataset"]) == set(paired["dataset"]) and len(fps) >= 5
    for ds, rows in paired.groupby("dataset"):
        ref = rows[rows["arch"] == rows["reference"]]
        assert len(ref) == 1 and ref["diff_mean"].item() == 0 and set(rows["method"]) == {"unet", "published"}
        rec = from_fingerprint(fps[fps["dataset"] == ds].iloc[0].to_dict())
        assert f"nearest set {ds}" in rec["basis"]
        assert rec["arch"] == from_paired(paired, ds)["arch"]  # same pixel size: the same network
