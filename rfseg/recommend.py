"""Which receptive field to use: from measured sweep results when they exist, else from a dataset fingerprint."""

from __future__ import annotations

import math

import pandas as pd

from rfseg.errors import UserError
from rfseg.models import build_model, receptive_field, sweep


HIGH_CONTRAST_STD = 1.0


def best_rf(summary: pd.DataFrame, dataset: str, metric: str = "hard_dice") -> dict:
    """The smallest RF whose mean score is within one standard deviation (over seeds) of the best mean."""
    nets = summary[(summary["dataset"] == dataset) & (summary["method"] == "unet")]
    if nets.empty:
        raise UserError(f"no network results for dataset {dataset!r} in the summary: run its sweep first")
    top = nets.loc[nets[f"{metric}_mean"].idxmax()]
    tol = 0.0 if math.isnan(top[f"{metric}_std"]) else float(top[f"{metric}_std"])
    ok = nets[nets[f"{metric}_mean"] >= top[f"{metric}_mean"] - tol]
    pick = ok.sort_values(["rf_px", "params"]).iloc[0]
    return {"dataset": dataset, "basis": "measured", "arch": pick["arch"], "rf_px": int(pick["rf_px"]),
            "rf_nm": None if pd.isna(pick["rf_nm"]) else float(pick["rf_nm"]),
            "score": float(pick[f"{metric}_mean"]), "best_arch": top["arch"],
            "best_score": float(top[f"{metric}_mean"]), "best_std": tol, "metric": metric,
            "reason": (f"{pick['arch']} (RF {int(pick['rf_px'])} px) scores {pick[f'{metric}_mean']:.3f}, within one "
                       f"seed std ({tol:.3f}) of the best, {top['arch']} at {top[f'{metric}_mean']:.3f}; it is the "
                       f"smallest such RF, so larger RFs buy nothing measurable on this dataset")}


def from_fingerprint(fp: dict, patch_px: int = 512) -> dict:
    """The paper's qualitative rule (not yet checked by this project's simulated series, see README).

    High amplitude contrast: RF barely matters, take the smallest. Low contrast: the RF should reach beyond the
    particles, about 1.7 x the median particle diameter (the paper's 8.4 nm plateau for 5 nm particles). The split
    at 1 background std lies between the measured contrasts of the demo's HRTEM (0.55) and low-res (1.77) sets."""
    px = fp.get("pixel_size_nm")
    contrast = fp.get("abs_amplitude_contrast")
    diam = fp.get("diameter_median_nm")
    if contrast is None or math.isnan(contrast):
        raise UserError(f"fingerprint of {fp.get('dataset')} has no amplitude contrast: cannot recommend")
    options = [(receptive_field(build_model(s)), s.name) for s in sweep(2, patch_px)]
    if contrast >= HIGH_CONTRAST_STD:
        rf, name = options[0]
        why = (f"amplitude contrast {contrast:.2f} background std is high: the paper found the RF barely matters "
               f"there, so the smallest RF (sharpest edges, cheapest) is enough")
    else:
        if not px or diam is None or math.isnan(diam):
            raise UserError("low-contrast data need a pixel size and particle diameters to size the RF")
        target = 1.7 * diam / px
        fits = [o for o in options if o[0] >= target] or [options[-1]]
        rf, name = fits[0]
        why = (f"amplitude contrast {contrast:.2f} background std is low: the paper found larger RFs help until the "
               f"RF is about 1.7 x the particle size ({1.7 * diam:.2f} nm here)")
    return {"dataset": fp.get("dataset"), "basis": "fingerprint (paper's rule)", "arch": name, "rf_px": rf,
            "rf_nm": rf * px if px else None, "reason": why}
