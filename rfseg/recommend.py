"""Which receptive field to use: from measured sweep results when they exist, else from a dataset fingerprint."""

from __future__ import annotations

import math

import pandas as pd

from rfseg.errors import UserError
from rfseg.models import build_model, receptive_field, sweep


HIGH_CONTRAST_STD = 1.0
# The lowest |amplitude contrast| (background std) that this project's simulated series (configs/series.yaml, README)
# measured. Its five sets span 0.29-0.77 and 2.4-11 nm particles; on every one the smallest RF was within one seed std
# of the best. Below this contrast the project has no evidence of its own and uses the paper's rule.
SERIES_MIN_CONTRAST_STD = 0.29


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
    """An RF from a dataset fingerprint, where no sweep has been measured on the data themselves.

    |contrast| >= 1 background std: the smallest RF (the paper and this project's low-res demo agree that the RF
    barely matters there). From :data:`SERIES_MIN_CONTRAST_STD` to 1: the smallest RF, because that was this
    project's simulated series' answer on all five sets (the paper found larger RFs help on its real low-contrast
    data, so the reason says to confirm with a sweep). Below the series' range: the paper's rule, an RF of about
    1.7 x the median particle diameter (its 8.4 nm plateau for 5 nm particles)."""
    px = fp.get("pixel_size_nm")
    contrast = fp.get("abs_amplitude_contrast")
    diam = fp.get("diameter_median_nm")
    if contrast is None or math.isnan(contrast):
        raise UserError(f"fingerprint of {fp.get('dataset')} has no amplitude contrast: cannot recommend")
    options = [(receptive_field(build_model(s)), s.name) for s in sweep(2, patch_px)]
    if contrast >= HIGH_CONTRAST_STD:
        (rf, name), basis = options[0], "fingerprint (paper and this project agree)"
        why = (f"amplitude contrast {contrast:.2f} background std is high: the paper and this project's low-res demo "
               f"found the RF barely matters there, so the smallest RF (sharpest edges, cheapest) is enough")
    elif contrast >= SERIES_MIN_CONTRAST_STD:
        (rf, name), basis = options[0], "fingerprint (this project's simulated series)"
        why = (f"amplitude contrast {contrast:.2f} background std lies in the range of this project's simulated "
               f"series ({SERIES_MIN_CONTRAST_STD}-0.77 std, 2.4-11 nm particles), where the smallest RF was "
               f"within one seed std of the best on all five sets; the paper found larger RFs help on its real "
               f"low-contrast data, so on real micrographs confirm with a sweep (e.g. n2_p22 against n2_p84)")
    else:
        if not px or diam is None or math.isnan(diam):
            raise UserError("low-contrast data need a pixel size and particle diameters to size the RF")
        target = 1.7 * diam / px
        fits = [o for o in options if o[0] >= target] or [options[-1]]
        (rf, name), basis = fits[0], "fingerprint (paper's rule)"
        why = (f"amplitude contrast {contrast:.2f} background std is below what this project's series measured "
               f"(from {SERIES_MIN_CONTRAST_STD}); the paper found larger RFs help on low-contrast data until the RF "
               f"is about 1.7 x the particle size ({1.7 * diam:.2f} nm here)")
    return {"dataset": fp.get("dataset"), "basis": basis, "arch": name, "rf_px": rf,
            "rf_nm": rf * px if px else None, "reason": why}
