import numpy as np
import pytest
from scipy import ndimage

from rfseg.blocks.fourier import LATTICE_SPACINGS_NM, annulus_radii, fourier_segment


def _band_ratio(image, labels, px, spacings):
    """Mean local energy in a spatial-frequency band inside particles over that in carbon far from them."""
    lo, hi = annulus_radii(spacings, px, image.shape[0])
    _, energy = fourier_segment(((image - image.mean()) / image.std())[None], lo, hi, 0.19 / px)
    inner = ndimage.binary_erosion(labels > 0, iterations=6)
    outer = ~ndimage.binary_dilation(labels > 0, iterations=12)
    return energy[0][inner].mean() / energy[0][outer].mean()


@pytest.mark.slow
def test_hrtem_shows_au_fringes_in_particles_only():
    from rfseg.blocks.simulate.hrtem import scherzer_defocus_a, simulate_dataset

    assert scherzer_defocus_a() == pytest.approx(-66.6, abs=0.1)
    lattice, control = [], []
    # Defaults at a high dose, so that the fringes of zone-axis particles stand above the shot noise; isolated
    # particles inside the field under flat illumination, so that raw particle and carbon pixels compare directly.
    scene = {"zone_axis_fraction": 0.5, "touching_fraction": 0.0, "cross_border": False, "illumination_variation": 0.0}
    for _, image, labels, p, params in simulate_dataset(6, 5, dose_e_per_a2=(2000, 3000), workers=2, **scene):
        assert image.dtype == np.float32 and image.shape == labels.shape == (512, 512)
        assert params["n_particles"] == labels.max() >= 1
        assert 0.02 < (labels > 0).mean() < 0.6
        lattice.append(_band_ratio(image, labels, p, LATTICE_SPACINGS_NM["Au"]))
        control.append(_band_ratio(image, labels, p, (0.45, 0.40)))  # no Au lattice planes there
        assert image[labels > 0].mean() < image[labels == 0].mean()  # particles slightly darker than carbon
    # Randomly oriented particles show few fringes, so judge over all images: inside particles the first-order Au
    # band carries more energy than in the carbon, well beyond a control band where Au has no lattice planes.
    lattice, control = np.array(lattice), np.array(control)
    assert (lattice > control).sum() >= 5
    assert lattice.max() > 3.0 and lattice.mean() > 1.5 * control.mean()
    assert abs(control.mean() - 1) < 0.2  # the control band is the same in particles and carbon


def test_lowres_masks_match_the_dark_particles():
    from rfseg.blocks.simulate.lowres import simulate_dataset

    for _, image, labels, px, params in simulate_dataset(2, 1):
        assert px == 0.1243 and labels.max() == params["n_particles"] >= 3
        inside, outside = image[labels > 0].mean(), image[labels == 0].mean()
        assert inside < 0.8 * outside  # strong amplitude contrast


def test_same_seed_same_micrographs():
    from rfseg.blocks.simulate import hrtem, lowres

    for make in (lambda: hrtem.simulate_dataset(2, 7, size=256, diameter_nm=(1.5, 2.0)),
                 lambda: lowres.simulate_dataset(2, 7)):
        a, b = list(make()), list(make())
        for (_, ia, la, _, pa), (_, ib, lb, _, pb) in zip(a, b):
            assert np.array_equal(ia, ib) and np.array_equal(la, lb) and pa == pb


def test_abtem_ffts_of_numpy_arrays_run_in_scipy_and_dask_arrays_keep_their_path():
    import dask.array as da
    import scipy.fft
    from abtem.core import fft as abtem_fft

    from rfseg.blocks.simulate.hrtem import route_abtem_fft_to_scipy

    assert route_abtem_fft_to_scipy()
    routed = abtem_fft._fft_dispatch
    assert route_abtem_fft_to_scipy() and abtem_fft._fft_dispatch is routed  # not wrapped twice
    wave = np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.complex64)
    out = abtem_fft.fft2(wave)
    assert out.dtype == np.complex64 and np.array_equal(out, scipy.fft.fft2(wave))
    assert np.array_equal(abtem_fft.ifft2(out), scipy.fft.ifft2(out))
    lazy = abtem_fft.fft2(da.from_array(wave, chunks=(1, 64, 64)))
    assert isinstance(lazy, da.Array) and np.array_equal(lazy.compute(), scipy.fft.fft2(wave))


def test_parallel_workers_make_the_same_micrographs_in_order():
    from rfseg.blocks.simulate import hrtem

    make = dict(size=128, pixel_size_nm=0.02, diameter_nm=(1.0, 1.3))
    serial = list(hrtem.simulate_dataset(3, 8, start=1, **make))
    parallel = list(hrtem.simulate_dataset(3, 8, start=1, workers=2, **make))
    assert [f[0] for f in parallel] == [f[0] for f in serial] == ["hrtem_001", "hrtem_002"]
    for (_, ia, la, pa, qa), (_, ib, lb, pb, qb) in zip(serial, parallel):
        assert np.array_equal(ia, ib) and np.array_equal(la, lb) and pa == pb and qa == qb


def test_a_bad_knob_in_a_worker_is_reported_as_the_user_error():
    from rfseg.blocks.simulate import hrtem
    from rfseg.errors import UserError

    with pytest.raises(UserError, match="zone_axis_fraction"):
        list(hrtem.simulate_dataset(2, 8, size=128, pixel_size_nm=0.02, diameter_nm=(1.0, 1.3), workers=2,
                                    zone_axis_fraction=2.0))


# ---------------------------------------------------------------------------------------- HRTEM realism knobs
# Small fields (128 px at 0.02 nm/px = 2.6 nm, 1-1.3 nm particles): each micrograph takes about a second.
SMALL = {"size": 128, "pixel_size_nm": 0.02, "diameter_nm": (1.0, 1.3)}


def _one(seed=3, **knobs):
    from rfseg.blocks.simulate.hrtem import simulate_dataset

    return next(iter(simulate_dataset(1, seed, **{**SMALL, **knobs})))[1:3]


def _radial_power(image):
    """Mean power in the outer (above half Nyquist) over the inner half of the spatial-frequency range."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    yy, xx = np.indices(f.shape) - np.array(f.shape)[:, None, None] // 2
    r = np.hypot(yy, xx) / (f.shape[0] // 2)
    return f[(r > 0.5) & (r <= 1)].mean() / f[(r > 0.05) & (r <= 0.5)].mean()


def test_detector_psf_coarsens_the_noise_and_keeps_the_dose():
    from rfseg.blocks.simulate.hrtem import detector

    flat = np.ones((128, 128), np.float32)
    sharp = detector(flat, 50.0, 0.0, 1.0, np.random.default_rng(0))
    blurred = detector(flat, 50.0, 0.8, 1.0, np.random.default_rng(0))
    assert sharp.mean() == pytest.approx(1, abs=0.01) and blurred.mean() == pytest.approx(1, abs=0.01)
    assert _radial_power(sharp) == pytest.approx(1, rel=0.15)  # shot noise is white
    assert _radial_power(blurred) < 0.2 * _radial_power(sharp)  # the point spread correlates it
    assert sharp.std() == pytest.approx(50 ** -0.5, rel=0.05)
    half = detector(flat, 50.0, 0.0, 0.5, np.random.default_rng(0))
    assert half.std() == pytest.approx(25 ** -0.5, rel=0.05)  # a DQE of 0.5 counts half the electrons


def test_read_noise_is_white_adds_in_quadrature_and_matters_at_low_dose_only():
    from rfseg.blocks.simulate.hrtem import detector

    flat = np.ones((128, 128), np.float32)
    for counts in (4.0, 400.0):
        plain = detector(flat, counts, 1.0, 1.0, np.random.default_rng(0))
        read = detector(flat, counts, 1.0, 1.0, np.random.default_rng(0), read_noise=1.0)
        added = read - plain  # the same shot noise (same draws), so the difference is the readout's alone
        assert added.std() == pytest.approx(1.0 / counts, rel=0.05)
        assert _radial_power(added) == pytest.approx(1, rel=0.15)
        assert read.mean() == pytest.approx(1, abs=0.02)
    low = detector(flat, 4.0, 1.0, 1.0, np.random.default_rng(1), read_noise=1.0).std()
    high = detector(flat, 400.0, 1.0, 1.0, np.random.default_rng(1), read_noise=1.0).std()
    # relative to the shot noise left after the point spread: large at 4 counts per pixel, negligible at 400
    assert low > 1.5 * detector(flat, 4.0, 1.0, 1.0, np.random.default_rng(1)).std()
    assert high < 1.2 * detector(flat, 400.0, 1.0, 1.0, np.random.default_rng(1)).std()


def test_noise_floor_lowers_the_dqe_at_low_dose_and_is_correlated_like_the_shot_noise():
    from rfseg.blocks.simulate.hrtem import detector

    flat = np.ones((256, 256), np.float32)
    for counts in (4.0, 400.0):  # no point spread: the variance is that of DQE / (1 + floor^2 / counted)
        counted = 0.5 * counts
        expected_dqe = 0.5 / (1 + 2.0**2 / counted)
        floored = detector(flat, counts, 0.0, 0.5, np.random.default_rng(0), noise_floor=2.0)
        assert floored.std() == pytest.approx((expected_dqe * counts) ** -0.5, rel=0.05)
        assert floored.mean() == pytest.approx(1, abs=0.02)
    low = detector(flat, 4.0, 1.0, 0.5, np.random.default_rng(0), noise_floor=2.0)
    # blurred with the shot noise, unlike the readout's white noise
    assert _radial_power(low) < 0.2 and _radial_power(low) == pytest.approx(
        _radial_power(detector(flat, 4.0, 1.0, 0.5, np.random.default_rng(0))), rel=0.3)
    # zero draws nothing: a micrograph without a floor is the one made before the option existed
    assert np.array_equal(detector(flat, 4.0, 1.0, 0.5, np.random.default_rng(3), noise_floor=0.0),
                          detector(flat, 4.0, 1.0, 0.5, np.random.default_rng(3)))


def test_illumination_is_a_slow_field_of_the_stated_amplitude():
    from rfseg.blocks.simulate.hrtem import illumination

    field = illumination((64, 64), 0.2, np.random.default_rng(1))
    assert np.abs(field - 1).max() == pytest.approx(0.2, rel=1e-5)
    assert np.abs(np.diff(field, axis=0)).max() < 0.02 and np.abs(np.diff(field, axis=1)).max() < 0.02


@pytest.mark.parametrize("shape", ["wulff", "octahedron", "decahedron", "icosahedron"])
def test_particle_shapes_have_the_volume_of_their_diameter(shape):
    from rfseg.blocks.simulate.hrtem import AU_DENSITY_PER_A3, particle_atoms

    xyz = particle_atoms(shape, 40.0, np.random.default_rng(0), round_corners=False)
    want = np.pi / 6 * 40.0**3 * AU_DENSITY_PER_A3
    assert 0.6 * want < len(xyz) < 1.5 * want
    assert np.abs(xyz.mean(0)).max() < 1e-6  # centred
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=2) + np.eye(len(xyz)) * 9
    assert d.min() > 2.6  # Au nearest neighbours 2.88 Å: no overlapping atoms
    rounded = particle_atoms(shape, 40.0, np.random.default_rng(0), round_corners=True)
    assert len(rounded) < len(xyz)


def test_lower_dose_lowers_the_lab_contrast():
    from rfseg.blocks.measures import lab_contrast

    contrast = {}
    for dose in (80.0, 884.0):  # the same scene (same seed): only the shot noise differs
        image, labels = _one(dose_e_per_a2=(dose, dose), size=256, diameter_nm=(2.0, 2.4), n_particles=(1, 1),
                             cross_border=False)
        contrast[dose] = lab_contrast(image, labels > 0)
    assert contrast[884.0] > 0.1 and contrast[80.0] < 0.6 * contrast[884.0], contrast


def _closest_to_earlier(touching_fraction, diameter_nm, L, seeds=range(8)):
    """For each particle after the first, the distance (Å) from its atoms to the nearest earlier particle's atom."""
    from scipy.spatial import cKDTree

    from rfseg.blocks.simulate.hrtem import SHAPES, _place_particles

    box, closest = [L, L, 1e6], []
    for seed in seeds:
        placed = _place_particles(np.random.default_rng(seed), L, 0.0, diameter_nm=diameter_nm, n_particles=(3, 3),
                                  shapes=SHAPES, zone_axis_fraction=0.3, touching_fraction=touching_fraction,
                                  cross_border=True)
        for i in range(1, len(placed)):
            earlier = cKDTree(np.concatenate([xyz for xyz, _ in placed[:i]]) % box, boxsize=box)
            closest.append(earlier.query(placed[i][0] % box)[0].min())
    return np.array(closest)


def test_touching_particles_fuse_and_particles_cross_the_border():
    touching = _closest_to_earlier(1.0, (4.0, 6.0), 110.0)  # the demo's particle sizes in an 11 nm field
    apart = _closest_to_earlier(0.0, (4.0, 6.0), 110.0)
    assert touching.min() >= 2.6 and (touching <= 3.0).sum() >= 4  # several fused at a neck, none overlapping
    assert np.median(touching) < apart.min()  # put against a partner, not just anywhere
    _, labels = _one(n_particles=(3, 3), touching_fraction=1.0, cross_border=True, seed=4)
    edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    _, isolated = _one(n_particles=(1, 1), touching_fraction=0.0, cross_border=False, seed=4, size=192)
    inner = np.concatenate([isolated[0], isolated[-1], isolated[:, 0], isolated[:, -1]])
    assert isolated.max() == 1 and not inner.any()  # without cross_border no particle reaches the edge
    assert (edges > 0).any()  # with cross_border, particles reach the edge of this crowded field


def test_particles_crossing_the_edge_keep_their_distance_from_those_they_meet_there():
    # a 4 nm periodic field crowded with 1-1.3 nm particles, most of which meet others across its edges
    assert _closest_to_earlier(0.5, (1.0, 1.3), 40.0).min() >= 2.6  # atoms no closer than in Au, wrapped


def test_knobs_are_deterministic_per_seed():
    knobs = {"defocus_spread_a": 50.0, "astigmatism_a": 20.0, "detector_psf_px": 0.7, "detector_dqe": 0.6,
             "illumination_variation": 0.1, "shapes": ("decahedron", "icosahedron"), "touching_fraction": 0.5,
             "cross_border": True}
    (ia, la), (ib, lb) = _one(**knobs), _one(**knobs)
    assert np.array_equal(ia, ib) and np.array_equal(la, lb)


def test_image_spread_damps_the_fine_contrast_before_the_noise():
    high_dose = {"dose_e_per_a2": (1e5, 1e5), "detector_psf_px": 0.0, "illumination_variation": 0.0}
    sharp, _ = _one(image_spread_a=0.0, **high_dose)
    spread, _ = _one(image_spread_a=0.65, **high_dose)
    assert spread.mean() == pytest.approx(sharp.mean(), rel=0.01)  # the darkness of the particles stays
    assert spread.std() < 0.6 * sharp.std()  # fringes and carbon speckle fade


def _power_share(image, low_per_a, high_per_a, px_a=0.2):
    """Share of the image's power at spatial frequencies in (low, high] per Å."""
    f = np.abs(np.fft.fft2(image - image.mean())) ** 2
    q = np.hypot(*np.meshgrid(*(np.fft.fftfreq(n, px_a) for n in image.shape), indexing="ij"))
    return f[(q > low_per_a) & (q <= high_per_a)].sum() / f.sum()


def test_frozen_phonons_damp_the_finest_fringes_and_do_not_darken_the_particles():
    coherent = {"dose_e_per_a2": (1e9, 1e9), "detector_psf_px": 0.0, "illumination_variation": 0.0,
                "image_spread_a": 0.0, "focal_spread_a": 0.0, "convergence_mrad": 0.0, "zone_axis_fraction": 1.0}
    (static, labels), (thermal, thermal_labels) = _one(seed=5, **coherent), _one(seed=5, frozen_phonons=6, **coherent)
    assert np.array_equal(labels, thermal_labels)  # the same scene, optics and noise draws, only vibrating
    # the Debye-Waller damping: less power beyond 1 per Å (measured 0.236 static, 0.186 with 8 configurations)
    assert _power_share(thermal, 1.0, 2.5) < 0.9 * _power_share(static, 1.0, 2.5)
    # diffuse scattering trades with the static lattice's own high-angle scattering: the particles are no darker
    assert thermal[labels > 0].mean() >= static[labels > 0].mean() - 0.002
    assert np.array_equal(thermal, _one(seed=5, frozen_phonons=6, **coherent)[0])


@pytest.mark.parametrize("option, value, needle", [
    ("--detector-psf-px", "-1", "detector_psf_px (--detector-psf-px) must be at least 0, got -1"),
    ("--image-spread-nm", "-0.02",
     "image_spread_nm (--image-spread-nm) must be at least 0, got -0.02"),
    ("--aperture-mrad", "0", "aperture_mrad (--aperture-mrad) must be above 0, got 0"),
    ("--illumination-variation", "1.5", "must be at most 0.9, got 1.5"),
    ("--frozen-phonons", "-2", "frozen_phonons (--frozen-phonons) must be at least 0, got -2"),
    ("--detector-noise-floor", "-1", "detector_noise_floor (--detector-noise-floor) must be at least 0, got -1"),
])
def test_a_knob_out_of_range_is_one_line_naming_key_and_option_in_the_users_unit(cli, tmp_path, option, value, needle):
    from tests.support import one_line_error

    one_line_error(cli("simulate", "hrtem", "--n-images", 1, "--seed", 1, "--size", 64, "--pixel-size", 0.02,
                       "--diameter-nm", "1.0,1.2", option, value, "--out", tmp_path / "s"), needle)
    assert not (tmp_path / "s").exists()
