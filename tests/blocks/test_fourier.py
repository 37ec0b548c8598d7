import numpy as np
import pandas as pd
import pytest

from support import make_patch_dir
from rfseg.errors import UserError
from rfseg.blocks.fourier import (LATTICE_SPACINGS_NM, annulus_radii, check_resolvable, false_negative_overlap,
                                  fourier_segment)
from rfseg.stages.baseline import run_baseline


def test_au_annulus_matches_paper_geometry():
    lo, hi = annulus_radii(LATTICE_SPACINGS_NM["Au"], 0.02152, 512)
    assert lo < 46.8 < 54.0 < hi  # the {111} and {200} rings
    assert 512 * 0.02152 / 0.2355 == pytest.approx(46.8, abs=0.05)
    assert 512 * 0.02152 / 0.2039 == pytest.approx(54.0, abs=0.05)
    assert 38 - 2 <= lo and hi <= 55 + 2  # inside the authors' hand-picked 38-55 px, widened by 2 px
    assert (lo, hi) == pytest.approx((44.45, 56.74), abs=0.01)  # the README: 44.4-56.7 px
    assert annulus_radii(LATTICE_SPACINGS_NM["Au"], 0.02152, 512, rel_tol=0) == pytest.approx((46.8, 54.0), abs=0.05)
    wide = annulus_radii(LATTICE_SPACINGS_NM["Au"], 0.02152, 512, rel_tol=0.2)
    assert wide == pytest.approx((46.79 * 0.8, 54.04 * 1.2), abs=0.05)


def test_lowres_lattice_not_resolved():
    lo, hi = annulus_radii(LATTICE_SPACINGS_NM["Au"], 0.1243, 256)
    with pytest.raises(UserError, match="not resolved at 0.1243 nm/px"):
        check_resolvable(hi, 256, 0.1243, LATTICE_SPACINGS_NM["Au"])


def test_fringes_are_found():
    size, px = 256, 0.02152
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (yy - 128) ** 2 + (xx - 128) ** 2 < 50**2
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (size, size)) + 3 * disk * np.cos(2 * np.pi * xx * px / 0.2355)
    lo, hi = annulus_radii(LATTICE_SPACINGS_NM["Au"], px, size)
    pred, _ = fourier_segment(img[None].astype(np.float32), lo, hi, sigma_px=0.19 / px)
    inter = (pred[0] & disk).sum()
    assert 2 * inter / (pred[0].sum() + disk.sum()) > 0.8


def test_baseline_skips_with_a_note(tmp_path):
    patches = make_patch_dir(tmp_path / "p", pixel_size_nm=0.1243)
    row = run_baseline(patches, tmp_path / "f", "toy")
    assert row["note"].startswith("skipped: lattice spacings")
    assert pd.read_csv(tmp_path / "f/metrics.csv")["method"].item() == "fourier"
    with pytest.raises(UserError, match="not in the table"):
        run_baseline(patches, tmp_path / "g", "toy", material="Unobtainium")


def test_fn_overlap():
    a = np.zeros((2, 4, 4), bool)
    a[0, 0, :2] = True
    b = np.zeros_like(a)
    b[0, 0, 1:3] = True
    t = false_negative_overlap(a, {"n": b})
    assert t.loc[0, "jaccard"] == pytest.approx(1 / 3) and np.isnan(t.loc[1, "jaccard"])
