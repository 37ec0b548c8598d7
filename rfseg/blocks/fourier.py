"""Fourier-filter segmentation, the paper's classical HRTEM baseline, with the annulus derived from the lattice.

Keep the spatial frequencies of the material's first-order lattice planes (an annulus in the centred FFT), transform
back, take the magnitude, blur it, threshold it with Otsu: particle = above threshold. Crystalline particles show
lattice fringes, amorphous carbon does not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from rfseg.errors import UserError

#: first-order lattice plane spacings in nm ({111}, {200}) of common nanoparticle materials
LATTICE_SPACINGS_NM = {
    "Au": (0.2355, 0.2039),
    "Ag": (0.2359, 0.2044),
    "Pt": (0.2265, 0.1962),
    "Pd": (0.2246, 0.1945),
    "Cu": (0.2087, 0.1808),
    "Ni": (0.2034, 0.1762),
    "CeO2": (0.3124, 0.2706),
}


def lattice_spacings(material: str | None, spacings_nm=None) -> tuple[float, ...]:
    """The first-order spacings (nm) to filter: ``spacings_nm`` when given, else the material's from the table.

    Raises UserError for a material that is not in :data:`LATTICE_SPACINGS_NM`."""
    if spacings_nm:
        return tuple(float(d) for d in spacings_nm)
    if material not in LATTICE_SPACINGS_NM:
        raise UserError(f"fourier.material (--material) {material!r} is not in the table "
                        f"({', '.join(LATTICE_SPACINGS_NM)}): give fourier.spacings_nm or fourier.radii_px")
    return LATTICE_SPACINGS_NM[material]


def annulus_radii(spacings_nm, pixel_size_nm: float, size_px: int, rel_tol: float = 0.05) -> tuple[float, float]:
    """Radii (px, in an FFT of ``size_px``) of the annulus holding the spots of every spacing, widened by
    ``rel_tol``. A spacing d sits at radius size_px * pixel_size_nm / d."""
    radii = [size_px * pixel_size_nm / d for d in spacings_nm]
    return min(radii) * (1 - rel_tol), max(radii) * (1 + rel_tol)


def check_resolvable(r_hi: float, size_px: int, pixel_size_nm: float, spacings_nm) -> None:
    """UserError if the annulus reaches the Nyquist limit (the lattice is finer than 2 px)."""
    if r_hi >= size_px / 2:
        raise UserError(
            f"lattice spacings {', '.join(f'{d:g}' for d in spacings_nm)} nm are not resolved at "
            f"{pixel_size_nm:g} nm/px (Nyquist limit {2 * pixel_size_nm:g} nm): the Fourier baseline needs "
            f"high-resolution data")


def fourier_segment(images: np.ndarray, r_lo: float, r_hi: float, sigma_px: float, window: bool = False):
    """Fourier-filter segmentation of patches (n, H, W) float32. Returns (masks bool (n, H, W), blurred
    filtered magnitude float32 (n, H, W))."""
    from skimage.filters import threshold_otsu

    x = np.asarray(images, np.float32)
    n, h, w = x.shape
    if window:
        x = x * np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy, fx = np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w
    r = np.hypot(fy[:, None], fx[None, :])
    keep = (r >= r_lo) & (r <= r_hi)
    filtered = np.abs(np.fft.ifft2(np.fft.fft2(x, axes=(-2, -1)) * keep, axes=(-2, -1)))
    blurred = ndimage.gaussian_filter(filtered, (0, sigma_px, sigma_px)).astype(np.float32)
    thresholds = np.array([threshold_otsu(b) if b.max() > b.min() else np.inf for b in blurred], np.float32)
    return blurred > thresholds[:, None, None], blurred


def false_negative_overlap(fourier_fn, network_fns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per test patch, the Jaccard index of the Fourier false-negative map with each network's (paper Fig. 7/S8).

    ``fourier_fn``: (n, H, W) bool; ``network_fns``: {label: (n, H, W) bool}. Patches where both maps are empty
    get NaN. Columns: patch, network, jaccard, fourier_fn_px, network_fn_px."""
    rows = []
    f = np.asarray(fourier_fn, bool)
    for label, fn in network_fns.items():
        g = np.asarray(fn, bool)
        inter = (f & g).reshape(len(f), -1).sum(1)
        union = (f | g).reshape(len(f), -1).sum(1)
        for i in range(len(f)):
            rows.append({"patch": i, "network": label,
                         "jaccard": inter[i] / union[i] if union[i] else np.nan,
                         "fourier_fn_px": int(f[i].sum()), "network_fn_px": int(g[i].sum())})
    return pd.DataFrame(rows)
