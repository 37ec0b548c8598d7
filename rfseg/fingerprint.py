"""Dataset fingerprint: the properties of a dataset that the receptive-field question depends on.

From the preprocessed micrographs and masks of one dataset: pixel size; particle equivalent diameters (nm, or px when
uncalibrated); amplitude contrast, (mean particle - mean background) / std background, per micrograph; lattice-fringe
strength, the share of particle area whose local energy in the material's first-order Bragg band exceeds the 95th
percentile of the background's; class balance; numbers of micrographs and patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from rfseg import data, io
from rfseg.fourier import LATTICE_SPACINGS_NM, annulus_radii, fourier_segment
from rfseg.patches import tile


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


def fingerprint(preprocessed_dir, patch_dir, dataset: str, material: str = "Au", min_particle_px: int = 10) -> dict:
    manifest = data.read_manifest(Path(preprocessed_dir) / "manifest.csv")
    summary = data.load_summary(patch_dir)
    px = summary["pixel_size_nm"]
    spacings = LATTICE_SPACINGS_NM.get(material, LATTICE_SPACINGS_NM["Au"])
    diameters, contrasts, fringes, fractions = [], [], [], []
    for rec in manifest.to_dict("records"):
        image = io.read_image(rec["image"]).data
        mask = io.read_mask(rec["mask"], image.shape)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        areas = np.bincount(labels.ravel())[1:]
        diameters += list(np.sqrt(4 * areas[areas >= min_particle_px] / np.pi))
        fractions.append(mask.mean())
        if mask.any() and (~mask).any():
            contrasts.append(amplitude_contrast(image, mask))
            fringes.append(fringe_share(image, mask, px, spacings))
    scale, unit = (px, "nm") if px else (1.0, "px")
    d = np.array(diameters) * scale
    fr = np.array(fringes, float)
    return {
        "dataset": dataset, "pixel_size_nm": px, "micrographs": len(manifest),
        "patches": sum(v["patches"] for v in summary["splits"].values()), "particles": len(d),
        f"diameter_median_{unit}": float(np.median(d)) if len(d) else np.nan,
        f"diameter_p10_{unit}": float(np.percentile(d, 10)) if len(d) else np.nan,
        f"diameter_p90_{unit}": float(np.percentile(d, 90)) if len(d) else np.nan,
        "amplitude_contrast": float(np.median(contrasts)) if contrasts else np.nan,
        "abs_amplitude_contrast": float(np.median(np.abs(contrasts))) if contrasts else np.nan,
        "fringe_share": float(np.nanmedian(fr)) if np.isfinite(fr).any() else np.nan,
        "particle_fraction": float(np.mean(fractions)), "material": material,
    }
