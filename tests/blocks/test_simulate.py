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
    # Demo settings at a high dose, so that the fringes of zone-axis particles stand above the shot noise.
    for _, image, labels, p, params in simulate_dataset(6, 5, dose_e_per_a2=(2000, 3000), threads=2):
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
