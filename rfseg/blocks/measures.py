"""What a dataset looks like to a network: contrast of the particles against the support, lattice-fringe strength.

Functions over one micrograph (rows, cols) float32 and its bool particle mask of the same shape: preprocessed,
except for :func:`lab_contrast`, which takes the raw micrograph and applies the published networks' recipe itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from rfseg.blocks.fourier import annulus_radii, fourier_segment
from rfseg.blocks.patches import tile
from rfseg.blocks.preprocess import Recipe, apply_recipe

#: the preprocessing of the lab that published the real-data networks: x-ray removal at median + 1500 counts (two
#: passes), the degree-2x2 Bézier flat field, standardisation of the whole micrograph
LAB_RECIPE = Recipe(xray_threshold=1500, xray_passes=2, flat_field="bezier")


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


def lab_contrast(raw: np.ndarray, mask: np.ndarray, flat_field: str = LAB_RECIPE.flat_field) -> float:
    """The published networks' lab's contrast of one raw micrograph: median background minus median particle
    intensity after :data:`LAB_RECIPE` (standardised units; positive when particles are darker than the support).
    ``flat_field`` replaces the recipe's ("none" for a window of a larger micrograph, whose flat field was fitted on
    the whole of it).

    The lab reports 0.576 for its real 5 nm Au set at 884 e/Å² and 0.239 at 80 e/Å²."""
    image, _, _ = apply_recipe(raw, None, None, replace(LAB_RECIPE, flat_field=flat_field))
    return float(np.median(image[~mask]) - np.median(image[mask]))
