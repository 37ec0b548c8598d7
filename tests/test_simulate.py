import numpy as np
import pytest
from scipy import ndimage

from rfseg.fourier import LATTICE_SPACINGS_NM, annulus_radii, fourier_segment


def _band_ratio(image, labels, px, spacings):
    """Mean local energy in a spatial-frequency band inside particles over that in carbon far from them."""
    lo, hi = annulus_radii(spacings, px, image.shape[0])
    _, energy = fourier_segment(((image - image.mean()) / image.std())[None], lo, hi, 0.19 / px)
    inner = ndimage.binary_erosion(labels > 0, iterations=6)
    outer = ~ndimage.binary_dilation(labels > 0, iterations=12)
    return energy[0][inner].mean() / energy[0][outer].mean()


@pytest.mark.slow
def test_hrtem_shows_au_fringes_in_particles_only():
    from rfseg.simulate.hrtem import scherzer_defocus_a, simulate_dataset

    assert scherzer_defocus_a() == pytest.approx(-66.6, abs=0.1)
    px = 0.02152
    lattice, control = [], []
    # Demo settings at a high dose, so that the fringes of zone-axis particles stand above the shot noise.
    for _, image, labels, p, params in simulate_dataset(4, 5, dose_e_per_a2=(2000, 3000), threads=2):
        assert image.dtype == np.float32 and image.shape == labels.shape == (512, 512)
        assert params["n_particles"] == labels.max() >= 1
        assert 0.02 < (labels > 0).mean() < 0.6
        lattice.append(_band_ratio(image, labels, p, LATTICE_SPACINGS_NM["Au"]))
        control.append(_band_ratio(image, labels, p, (0.45, 0.40)))  # no Au lattice planes there
        assert image[labels > 0].mean() < image[labels == 0].mean()  # particles slightly darker than carbon
    assert np.median(lattice) > 2.0  # a strong first-order Au band inside particles ...
    assert np.median(lattice) > 1.5 * np.median(control)  # ... that is a lattice peak, not just contrast


def test_lowres_masks_match_the_dark_particles():
    from rfseg.simulate.lowres import simulate_dataset

    for _, image, labels, px, params in simulate_dataset(2, 1):
        assert px == 0.1243 and labels.max() == params["n_particles"] >= 3
        inside, outside = image[labels > 0].mean(), image[labels == 0].mean()
        assert inside < 0.8 * outside  # strong amplitude contrast
