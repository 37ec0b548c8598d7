"""Stage: which receptive field to use (``rfseg recommend``): from measured sweep results when they exist, else
from a dataset fingerprint."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rfseg.blocks.models import build_model, receptive_field, sweep
from rfseg.blocks.stats import smallest_rf_within_one_std
from rfseg.errors import UserError


HIGH_CONTRAST_STD = 1.0
# The lowest |amplitude contrast| (background std) that this project's simulated series (configs/series.yaml, README)
# measured. Its five sets span 0.29-0.77 and 2.4-11 nm particles; on every one the smallest RF was within one seed std
# of the best. Below this contrast the project has no evidence of its own and uses the paper's rule.
SERIES_MIN_CONTRAST_STD = 0.29


def best_rf(summary: pd.DataFrame, dataset: str, metric: str = "hard_dice") -> dict:
    """The smallest RF whose mean score is within one standard deviation (over seeds) of the best mean."""
    choice = smallest_rf_within_one_std(summary, dataset, metric)
    if choice is None:
        raise UserError(f"no network results for dataset {dataset!r} in the summary: run its sweep first")
    pick, top, tol = choice["pick"], choice["top"], choice["tol"]
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


def recommend(target: str, results=None, fingerprints=(), patch_px: int = 512) -> dict:
    """The recommendation for ``target``: a dataset name found in the sweep summary ``results`` (measured), else
    in the fingerprint files, or a fingerprint CSV itself."""
    if results:
        if not Path(results).is_file():
            raise UserError(f"{results}: results file not found")
        summary = pd.read_csv(results)
        if target in set(summary["dataset"]):
            return best_rf(summary, target)
    files = [Path(target)] if str(target).endswith(".csv") else [Path(f) for f in fingerprints]
    rows = [pd.read_csv(f) for f in files if f.is_file()]
    rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if str(target).endswith(".csv") and not rows.empty:
        return from_fingerprint(rows.iloc[0].to_dict(), patch_px)
    if not rows.empty and target in set(rows["dataset"]):
        return from_fingerprint(rows[rows["dataset"] == target].iloc[0].to_dict(), patch_px)
    raise UserError(f"unknown dataset {target!r}: give --results with its sweep, --fingerprints with its "
                    f"fingerprint, or a fingerprint CSV")
