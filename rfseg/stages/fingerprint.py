"""Stage: a dataset's fingerprint, the properties the receptive-field question depends on (``rfseg fingerprint``).

From the preprocessed micrographs and masks of one dataset: pixel size; particle equivalent diameters (px, and nm
when calibrated); amplitude contrast, (mean particle - mean background) / std background, per micrograph;
lattice-fringe strength, the share of particle area whose local energy in the material's first-order Bragg band
exceeds the 95th percentile of the background's; the lab contrast of the published networks (median background
minus median particle after their preprocessing of the raw micrograph), per micrograph; class balance; numbers of
micrographs and patches. With ``published_flat_field="none"`` the lab contrast is taken without the networks' flat
field, for micrographs that are windows of larger ones flat-fielded as a whole (as ``rfseg evaluate`` judges them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io
from rfseg.blocks.fourier import LATTICE_SPACINGS_NM
from rfseg.blocks.measures import LAB_RECIPE, amplitude_contrast, fringe_share, lab_contrast
from rfseg.blocks.particles import label_particles
from rfseg.blocks.preprocess import RecipeError
from rfseg.errors import UserError, check_choice

#: the lab contrast's flat field for each choice of ``published_flat_field`` (``rfseg evaluate``'s choices): the
#: published networks' own, or none for windows of larger micrographs flat-fielded as a whole
LAB_FLAT_FIELDS = {"bundle": LAB_RECIPE.flat_field, "none": "none"}


def _quantiles(d: np.ndarray, unit: str) -> dict:
    return {f"diameter_median_{unit}": float(np.median(d)) if len(d) else np.nan,
            f"diameter_p10_{unit}": float(np.percentile(d, 10)) if len(d) else np.nan,
            f"diameter_p90_{unit}": float(np.percentile(d, 90)) if len(d) else np.nan}


def fingerprint(preprocessed_dir, patch_dir, dataset: str, out=None, *, material: str = "Au",
                min_particle_px: int = 10, published_flat_field: str = "bundle") -> dict:
    """The fingerprint of one dataset as a dict (one CSV row, written to ``out`` when given).

    nm columns are left empty for uncalibrated data; ``material`` picks the lattice spacings of the fringe share
    (Au when the material is not in the table); ``published_flat_field`` picks the lab contrast's flat field
    (:data:`LAB_FLAT_FIELDS`)."""
    check_choice("published_flat_field", published_flat_field, LAB_FLAT_FIELDS)
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
            try:
                lab.append(lab_contrast(raw, io.read_mask(rec["source_mask"], raw.shape),
                                        LAB_FLAT_FIELDS[published_flat_field]))
            except RecipeError as e:  # the recipe is the published networks', not the user's to change
                raise UserError(f"{rec['source_image']}: the lab contrast: {e.problem}",
                                "if these micrographs are windows of larger ones flat-fielded as a whole, measure "
                                "without the flat field (config: evaluation.published_flat_field: none; rfseg "
                                "fingerprint --published-flat-field none)") from None
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
