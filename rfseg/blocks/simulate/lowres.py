"""Low-resolution TEM of ~20 nm particles: mass-thickness (amplitude) contrast, no lattice fringes.

Each particle is a randomly oriented ellipsoid whose projected thickness t attenuates the beam as exp(-t / l)
(l: a contrast length in nm); the support adds low-frequency thickness variation; the image is blurred by a Gaussian
point-spread function and gets Poisson noise at the given dose. The mask is the particle's projected outline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rfseg.errors import UserError


def simulate_image(rng: np.random.Generator, *, size=512, pixel_size_nm=0.1243, diameter_nm=(15.0, 25.0),
                   n_particles=(3, 7), contrast_length_nm=25.0, support_variation=0.04, psf_sigma_px=1.5,
                   dose_e_per_a2=16.0):
    """One micrograph. Returns (intensity float32 (size, size), labels uint16, params dict)."""
    field = size * pixel_size_nm
    if field < 2 * 1.15 * diameter_nm[1] / 2 + 2:
        raise UserError(f"a {size} px field at {pixel_size_nm:g} nm/px ({field:.1f} nm) cannot hold particles of up to "
                        f"{diameter_nm[1]:g} nm: raise --size or lower --diameter-nm")
    yy, xx = np.mgrid[0:size, 0:size] * pixel_size_nm
    thickness = np.zeros((size, size))
    labels = np.zeros((size, size), np.uint16)
    centres, radii = [], []
    want = rng.integers(n_particles[0], n_particles[1] + 1)
    for _ in range(200):
        if len(centres) == want:
            break
        d = rng.uniform(*diameter_nm)
        a, b = d / 2 * rng.uniform(0.85, 1.15), d / 2 * rng.uniform(0.85, 1.15)
        r = max(a, b)
        c = rng.uniform(r + 1, size * pixel_size_nm - r - 1, 2)
        if any(np.hypot(*(c - c2)) < r + r2 + 0.5 for c2, r2 in zip(centres, radii)):
            continue
        theta = rng.uniform(0, np.pi)
        u = ((xx - c[1]) * np.cos(theta) + (yy - c[0]) * np.sin(theta)) / a
        v = (-(xx - c[1]) * np.sin(theta) + (yy - c[0]) * np.cos(theta)) / b
        rho2 = u**2 + v**2
        inside = rho2 < 1
        thickness[inside] += 2 * min(a, b) * np.sqrt(1 - rho2[inside])
        labels[inside] = len(centres) + 1
        centres.append(c)
        radii.append(r)
    support = ndimage.gaussian_filter(rng.normal(size=(size, size)), 12)
    support *= support_variation / support.std()
    intensity = np.exp(-thickness / contrast_length_nm) * (1 + support)
    intensity = ndimage.gaussian_filter(intensity, psf_sigma_px)
    from rfseg.blocks.simulate import poisson_noise

    noisy = poisson_noise(intensity, dose_e_per_a2 * (pixel_size_nm * 10) ** 2, rng)
    return noisy, labels, {"n_particles": len(centres), "dose_e_per_A2": dose_e_per_a2}


def simulate_dataset(n_images: int, seed: int, **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for ``n_images`` micrographs from one seed."""
    from rfseg.blocks.simulate import seeded_frames

    return seeded_frames(simulate_image, "lowres", n_images, seed, 0.1243, **kwargs)
