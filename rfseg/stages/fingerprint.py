"""Stage: a dataset's fingerprint, the properties the receptive-field question depends on (``rfseg fingerprint``).

From the preprocessed micrographs and masks of one dataset: pixel size; particle equivalent diameters (px, and nm
when calibrated); amplitude contrast, (mean particle - mean background) / std background, per micrograph;
lattice-fringe strength, the share of particle area whose local energy in the material's first-order Bragg band
exceeds the 95th percentile of the background's; the lab contrast of the published networks (median background
minus median particle after their preprocessing of the raw micrograph), per micrograph; class balance; numbers of
micrographs and patches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io
from rfseg.blocks.fourier import LATTICE_SPACINGS_NM
from rfseg.blocks.measures import amplitude_contrast, fringe_share, lab_contrast
from rfseg.blocks.particles import label_particles


def _quantiles(d: np.ndarray, unit: str) -> dict:
    return {f"diameter_median_{unit}": float(np.median(d)) if len(d) else np.nan,
            f"diameter_p10_{unit}": float(np.percentile(d, 10)) if len(d) else np.nan,
            f"diameter_p90_{unit}": float(np.percentile(d, 90)) if len(d) else np.nan}


def fingerprint(preprocessed_dir, patch_dir, dataset: str, out=None, *, material: str = "Au",
                min_particle_px: int = 10) -> dict:
    """The fingerprint of one dataset as a dict (one CSV row, written to ``out`` when given).

    nm columns are left empty for uncalibrated data; ``material`` picks the lattice spacings of the fringe share
    (Au when the material is not in the table)."""
    manifest, _ = artifacts.read_preprocessed(preprocessed_dir)
    summary = artifacts.read_patch_summary(patch_dir)
    px = summary["pixel_size_nm"]
    spacings = LATTICE_SPACINGS_NM.get(material, LATTICE_SPACINGS_NM["Au"])
    diameters, contrasts, fringes, fractions, lab = [], [], [], [], []
    for rec in manifest.to_dict("records"):
        image = io.read_image(rec["image"]).data
        mask = io.read_mask(rec["mask"], image.shape)
        areas = np.bincount(label_particles(mask).ravel())[1:]
        diameters += list(np.sqrt(4 * areas[areas >= min_particle_px] / np.pi))
        fractions.append(mask.mean())
        if mask.any() and (~mask).any():
            contrasts.append(amplitude_contrast(image, mask))
            fringes.append(fringe_share(image, mask, px, spacings))
            raw = io.read_image(rec["source_image"]).data
            lab.append(lab_contrast(raw, io.read_mask(rec["source_mask"], raw.shape)))
    d = np.array(diameters)
    fr = np.array(fringes, float)
    fp = {
        "dataset": dataset, "pixel_size_nm": px, "micrographs": len(manifest),
        "patches": sum(v["patches"] for v in summary["splits"].values()), "particles": len(d),
        **_quantiles(d, "px"), **_quantiles(d * (px if px else np.nan), "nm"),
        "amplitude_contrast": float(np.median(contrasts)) if contrasts else np.nan,
        "abs_amplitude_contrast": float(np.median(np.abs(contrasts))) if contrasts else np.nan,
        "fringe_share": float(np.nanmedian(fr)) if np.isfinite(fr).any() else np.nan,
        "lab_contrast": float(np.median(lab)) if lab else np.nan,
        "particle_fraction": float(np.mean(fractions)), "material": material,
    }
    if out is not None:
        io.write_csv(pd.DataFrame([fp]), out)
    return fp
