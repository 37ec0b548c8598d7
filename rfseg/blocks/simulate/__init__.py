"""Built-in demo datasets: simulated micrographs with exact particle masks.

``hrtem``: Au nanoparticles on amorphous carbon by abTEM multislice (lattice fringes, weak amplitude contrast).
``lowres``: ~20 nm particles with mass-thickness (amplitude) contrast at ~0.12 nm/px.
Each yields (name, image float32, labels uint16, pixel size nm/px, parameters) frames; the simulate stage writes them
through :func:`rfseg.blocks.artifacts.write_simulated`.
"""

from __future__ import annotations

import numpy as np


def seeded_frames(simulate_image, prefix: str, n_images: int, seed: int, default_pixel_size_nm: float, start: int = 0,
                  **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for micrographs ``start`` to ``n_images - 1`` of
    ``simulate_image``.

    Each micrograph draws from its own stream spawned from ``seed``, so no micrograph can shift the next, and
    micrograph i is the same whether or not the ones before it are made."""
    px = kwargs.get("pixel_size_nm", default_pixel_size_nm)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        if i < start:
            continue
        image, labels, params = simulate_image(np.random.default_rng(child), **kwargs)
        yield f"{prefix}_{i:03d}", image, labels, px, params


def poisson_noise(intensity: np.ndarray, counts_per_px: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise for a mean of ``counts_per_px`` electrons per pixel at intensity 1; returned in intensity units."""
    return (rng.poisson(np.clip(intensity, 0, None) * counts_per_px) / counts_per_px).astype(np.float32)
