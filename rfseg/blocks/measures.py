"""What a dataset looks like to a network: contrast of the particles against the support, lattice-fringe strength.

Functions over one preprocessed micrograph (rows, cols) float32 and its bool particle mask of the same shape.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rfseg.blocks.fourier import annulus_radii, fourier_segment
from rfseg.blocks.patches import tile


def amplitude_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """(mean inside - mean outside) / std outside; negative when particles are darker than the support."""
    bg = image[~mask]
    return float((image[mask].mean() - bg.mean()) / bg.std())


def fringe_share(image: np.ndarray, mask: np.ndarray, pixel_size_nm: float | None, spacings_nm,
                 tile_px: int = 256, sigma_nm: float = 0.19) -> float:
    """Share of particle pixels whose Bragg-band energy exceeds the 95th percentile of the background's.

    NaN when the pixel size is unknown or cannot resolve the spacings (no fringes can be seen)."""
    if pixel_size_nm is None or 2 * pixel_size_nm >= min(spacings_nm) / (1 + 0.05):
        return float("nan")
    size = min(tile_px, *image.shape)
    tiles, _ = tile(image, size)
    masks, _ = tile(mask, size)
    r_lo, r_hi = annulus_radii(spacings_nm, pixel_size_nm, size)
    _, energy = fourier_segment(tiles, r_lo, r_hi, sigma_nm / pixel_size_nm)
    # keep away from the particle edges, where the blur mixes the two classes
    grow = max(1, int(round(2 * sigma_nm / pixel_size_nm)))
    inner = np.stack([ndimage.binary_erosion(m, iterations=grow) for m in masks])
    outer = ~np.stack([ndimage.binary_dilation(m, iterations=2 * grow) for m in masks])
    if not inner.any() or not outer.any():
        return float("nan")
    return float((energy[inner] > np.percentile(energy[outer], 95)).mean())
