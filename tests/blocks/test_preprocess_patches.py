import numpy as np
import pytest
import torch

from rfseg.errors import UserError
from rfseg.blocks.augment import dihedral, dihedral_batch, dihedral_inverse
from rfseg.blocks.patches import kfold_groups, split_groups, tile
from rfseg.blocks.preprocess import bezier_flat_field, bezier_surface, flat_field, remove_xrays, resample, standardise


def test_remove_xrays_replaces_hot_pixels_with_neighbour_mean():
    img = np.full((16, 16), 100.0, np.float32)
    img[5, 5] = 5000
    img[5, 6] = 4000  # a 2-px hit: the second pass catches what the first leaves
    out = remove_xrays(img, threshold=1500, passes=2)
    assert out.max() < 1600 and out[0, 0] == 100
    assert img[5, 5] == 5000  # input untouched
    one = remove_xrays(np.pad(np.array([[9.0]]), 1, constant_values=1.0), threshold=5, passes=1)
    assert one[1, 1] == pytest.approx(1.0)


def test_remove_xrays_on_a_camera_sized_frame():
    """Isolated hits become the mean of their 8 neighbours; every other pixel is left exactly as it was."""
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (2048, 2048)).astype(np.float32)
    ys, xs = rng.integers(2, 680, 200) * 3, rng.integers(2, 680, 200) * 3  # a 3 px grid keeps hits apart
    img[ys, xs] = 5000
    out = remove_xrays(img, threshold=1500)
    hot = np.zeros(img.shape, bool)
    hot[ys, xs] = True
    np.testing.assert_array_equal(out[~hot], img[~hot])
    for y, x in zip(ys[:20], xs[:20]):
        window = img[y - 1:y + 2, x - 1:x + 2].astype(np.float64)
        assert out[y, x] == pytest.approx((window.sum() - window[1, 1]) / 8, rel=1e-5)


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
    # a ramp along y sampled at 0.1 nm/px, resampled to 0.2 nm/px, is the same ramp in nm
    y_nm = (np.arange(100) + 0.5) * 0.1
    img = np.repeat((3 * y_nm)[:, None], 50, axis=1).astype(np.float32)
    out = resample(img, (0.1, 0.2), 0.2)
    assert out.shape == (50, 50)
    inner = ((np.arange(50) + 0.5) * 0.2)[2:-2]
    np.testing.assert_allclose(out[2:-2, 10], 3 * inner, rtol=1e-3)
    mask = np.zeros((100, 50), bool)
    mask[20:60, 10:30] = True
    small = resample(mask, (0.1, 0.2), 0.2, is_mask=True)
    assert small.dtype == bool and small[10:30, 10:30].all() and small.sum() == 20 * 20
    with pytest.raises(UserError, match="factor 10"):
        resample(img, (1.0, 1.0), 0.1)  # a wrong pixel size, not a wish for a 10x larger image


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


def test_bezier_surface_recovers_a_quadratic_illumination_despite_particles():
    """The published networks' flat field: a degree-2x2 Bernstein surface is fitted exactly, and the reweighting keeps
    dark particles from pulling it down."""
    h, w = 400, 300
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    illumination = 1000 * (1 + 0.3 * v - 0.2 * u**2 + 0.1 * u * v)
    yy, xx = np.mgrid[0:h, 0:w]
    particles = ((yy - 100) ** 2 + (xx - 80) ** 2 < 40**2) | ((yy - 300) ** 2 + (xx - 200) ** 2 < 50**2)
    image = illumination * np.where(particles, 0.6, 1.0)
    surface = bezier_surface(image)
    bg = ~particles
    assert np.abs(surface[bg] / illumination[bg] - 1).max() < 0.02
    unweighted = bezier_surface(image, reweights=0)
    assert np.abs(surface / illumination - 1).mean() < 0.3 * np.abs(unweighted / illumination - 1).mean()
    flat = bezier_flat_field(image)
    assert flat.dtype == np.float32 and flat[bg].std() / flat[bg].mean() < 0.01
    with pytest.raises(UserError, match="positive intensities"):
        bezier_flat_field(image - 2000)


def test_a_bezier_flat_field_on_a_small_field_takes_away_the_darkness_of_particles_filling_half_of_it():
    """Why the realism benchmark can treat a simulated field as a window of a larger micrograph (flat field "none"):
    faint particles over half of a field pull a surface fitted on that field down with them."""
    from rfseg.blocks.measures import lab_contrast

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    particles = ((yy - 70) ** 2 + (xx - 70) ** 2 < 60**2) | ((yy - 150) ** 2 + (xx - 100) ** 2 < 55**2)
    image = 1000 * np.where(particles, 0.92, 1.0) * (1 + 0.05 * rng.normal(size=particles.shape))
    whole, window = lab_contrast(image, particles), lab_contrast(image, particles, flat_field="none")
    assert window > 1.0 and whole < 0.8 * window
