import numpy as np
import pytest

from rfseg.blocks.particles import (default_min_area_px, particle_filter, particle_table, postprocess,
                                    size_statistics, label_particles)
from rfseg.errors import UserError


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def test_specks_are_dropped_holes_filled_and_touching_discs_split_only_when_asked():
    shape = (200, 200)
    touching = _disc(shape, 60, 60, 20) | _disc(shape, 60, 96, 20)  # centres 36 px apart, radii 20: they touch
    ring = _disc(shape, 150, 140, 25) & ~_disc(shape, 150, 140, 6)  # a particle with a hole
    specks = np.zeros(shape, bool)
    specks[[10, 30, 180], [180, 150, 20]] = True
    specks[100:102, 10:12] = True
    mask = touching | ring | specks
    labels, dropped = postprocess(mask, min_area_px=20)
    assert dropped == 4 and labels.max() == 2  # the touching pair as one, the ring
    assert (labels > 0)[150, 140]  # the hole is filled
    assert (labels > 0).sum() == (touching | _disc(shape, 150, 140, 25)).sum()
    split, _ = postprocess(mask, min_area_px=20, split=True, split_min_distance_px=10)
    assert split.max() == 3
    assert split[60, 55] != split[60, 101] and split[60, 55] > 0 and split[60, 101] > 0
    kept, none_dropped = postprocess(mask, min_area_px=0, fill_holes=False)
    assert none_dropped == 0 and kept.max() == 6 and not (kept > 0)[150, 140]


def test_particle_table_units_and_border_flag():
    mask = _disc((100, 100), 50, 50, 10) | _disc((100, 100), 5, 50, 8)
    labels = label_particles(mask)
    t = particle_table(labels, mask.astype(np.float32), 0.5)
    assert t["touches_border"].tolist() == [True, False]
    inner = t.iloc[1]
    assert inner["equivalent_diameter_px"] == pytest.approx(20, rel=0.03)
    assert inner["equivalent_diameter_nm"] == pytest.approx(10, rel=0.03)
    assert inner["area_nm2"] == pytest.approx(inner["area_px2"] * 0.25)
    blank = particle_table(labels, mask.astype(np.float32), None)
    assert blank["equivalent_diameter_nm"].isna().all() and blank["area_px2"].equals(t["area_px2"])


def test_training_statistics_ignore_particles_cut_by_the_border():
    masks = [_disc((128, 128), 64, 64, r) | _disc((128, 128), 0, 64, 30) for r in (5, 10, 15)]
    s = size_statistics(masks, 0.1)
    assert s["n"] == 3
    assert s["area_px2_p1"] == pytest.approx(np.pi * 5**2, rel=0.1)
    assert s["area_nm2_p1"] == pytest.approx(s["area_px2_p1"] * 0.01)
    assert s["equivalent_diameter_px_p50"] == pytest.approx(20, rel=0.05)


def test_default_rule_follows_the_training_particles_and_the_grid():
    meta = {"pixel_size_nm": 0.1, "training_particles": {"n": 40, "area_px2_p1": 80.0,
                                                         "equivalent_diameter_px_p50": 30.0}}
    area, rule = default_min_area_px(meta, 0.1)
    assert area == pytest.approx(20) and "1st-percentile" in rule
    assert default_min_area_px(meta, 0.05)[0] == pytest.approx(80)  # a finer grid: the same area in nm² is 4x px²
    published = {"pixel_size_nm": 0.02, "provenance": {"diameter_nm": 5.0}}
    area, rule = default_min_area_px(published, 0.02)
    assert area * 0.02**2 == pytest.approx(0.25 * np.pi / 4 * 2.5**2) and "nominal" in rule
    f = particle_filter(meta, 0.1, split=True)
    assert f.split_min_distance_px == pytest.approx(15) and f.fill_holes
    assert particle_filter(meta, 0.1, keep_all=True).min_area_px == 0
    assert particle_filter(meta, 0.1, min_area_nm2=2.0).min_area_px == pytest.approx(200)
    with pytest.raises(UserError, match="use --min-area-px"):
        particle_filter({"pixel_size_nm": None}, None, min_area_nm2=2.0)
