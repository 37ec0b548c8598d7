"""Stage: which receptive field to use (``rfseg recommend``): from the dataset's own sweep when it was measured, else
from its fingerprint and the nearest set of a measured series, else from the paper.

Every answer names its evidence. A sweep with paired differences (``rfseg paired``) decides by intervals: a larger RF
is chosen only when its gain over the smallest RF clears its 95 % interval, and then the cheapest RF whose gain
reaches that interval's lower bound.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks.models import build_model, receptive_field, sweep
from rfseg.blocks.stats import cheapest_within_interval, smallest_rf_within_one_std
from rfseg.errors import UserError

#: the measured series shipped with rfseg (configs/series.yaml): its paired differences and fingerprints
SERIES = Path(__file__).resolve().parents[2] / "resources" / "series"
HIGH_CONTRAST_STD = 1.0
#: the paper's plateau: an RF of 8.4 nm sufficed for 5 nm particles on real low-contrast HRTEM
PAPER_RF_PER_DIAMETER = 1.7
#: how far beyond the measured series' span a fingerprint may lie and still be judged by its nearest set: 25 % in
#: particle diameter, 0.05 in lab contrast (about the spread of one set's micrographs)
SERIES_MARGIN = {"diameter": 0.25, "lab_contrast": 0.05}


def _nm(row) -> float | None:
    return None if pd.isna(row["rf_nm"]) else float(row["rf_nm"])


def _half_width(row) -> float:
    return float(row["ci_half_width"]) if "ci_half_width" in row else (row["diff_ci_high"] - row["diff_ci_low"]) / 2


def _gain(row) -> str:
    return f"{row['diff_mean']:+.3f} [{row['diff_ci_low']:+.3f}, {row['diff_ci_high']:+.3f}]"


#: the interval half-width (dice) a comparison should reach; the estimate of the micrographs needed aims at it
TARGET_HALF_WIDTH = 0.03


def micrographs_needed(n_micrographs: int, half_width: float, target: float = TARGET_HALF_WIDTH) -> int:
    """Test micrographs that would bring an interval of ``half_width`` over ``n_micrographs`` under ``target``,
    assuming the half-width shrinks as 1/sqrt(micrographs) (the micrograph-to-micrograph spread dominating, as in
    the measured series)."""
    return max(n_micrographs, math.ceil(n_micrographs * (half_width / target) ** 2))


def from_paired(paired: pd.DataFrame, dataset: str) -> dict:
    """The measured choice on ``dataset`` from its paired differences (:func:`~rfseg.blocks.stats.
    cheapest_within_interval`), with the evidence in the reason. Architectures with a flagged run (no particle or
    every pixel predicted, or a loss that never fell) are left out; a flagged reference, or nothing left, is
    refused. When no gain clears its interval the answer says it cannot tell, with how many test micrographs would
    (:func:`micrographs_needed`), unless that interval is already narrower than :data:`TARGET_HALF_WIDTH`: then the
    receptive fields score alike within it and the cheapest is recommended as measured (``alike``)."""
    nets = paired[(paired["dataset"] == dataset) & (paired["method"] == "unet")]
    if nets.empty:
        raise UserError(f"no paired differences for dataset {dataset!r}: run its sweep and 'rfseg paired' first")
    if "n_flagged" in nets:
        flagged = nets[nets["n_flagged"] > 0]
        ref = nets["reference"].iloc[0] if "reference" in nets else nets.sort_values("rf_px")["arch"].iloc[0]
        if len(flagged) == len(nets) or ref in set(flagged["arch"]):
            raise UserError(f"{dataset}: cannot recommend: runs of {', '.join(flagged['arch'])} are flagged (they "
                            f"predict no particle or every pixel, or their loss never fell; the status column of "
                            f"summary.csv says which)", fix="train longer (training.epochs) or check the masks, "
                                                           "then rerun the sweep")
        nets = nets[nets["n_flagged"] == 0]
    c = cheapest_within_interval(nets)
    pick, best = c["pick"], c["best"]
    ref = best["reference"] if "reference" in best else nets.sort_values("rf_px")["arch"].iloc[0]
    n, seeds = int(best["n_micrographs"]), int(best["n_seeds"])
    span = f"{n} test micrographs x {seeds} seeds; hard dice minus {ref}'s, 95 % bootstrap interval"
    half = _half_width(best)
    alike = not c["worse"] and not c["resolved"] and half < TARGET_HALF_WIDTH
    need = None if c["resolved"] or alike else micrographs_needed(n, half)
    if c["worse"]:
        why = (f"every larger RF scores measurably lower than the smallest ({span}): "
               + "; ".join(f"{r.arch} {_gain(r._asdict())}" for r in nets[nets["arch"] != ref].itertuples())
               + f"; so the smallest RF, {pick['arch']}")
    elif alike:
        why = (f"no larger RF scores measurably higher ({span}): the best, {best['arch']}, gains {_gain(best)}, an "
               f"interval that includes 0 and is narrower than +/-{TARGET_HALF_WIDTH}, so the receptive fields score "
               f"alike here within {half:.3f}; the cheapest, {pick['arch']}, costs least")
    elif not c["resolved"]:
        why = (f"cannot tell with {n} test micrographs x {seeds} seeds: the best, {best['arch']}, gains "
               f"{_gain(best)} ({span}), an interval that includes 0; about {need} test micrographs would bring its "
               f"half-width ({half:.3f}) under {TARGET_HALF_WIDTH} (assuming it shrinks as 1/sqrt(micrographs)); "
               f"until then the cheapest RF, {pick['arch']}, costs least")
    else:
        why = (f"{best['arch']} gains {_gain(best)} over {ref} ({span}); {pick['arch']} is the smallest RF whose mean "
               f"gain ({pick['diff_mean']:+.3f}) reaches that interval's lower bound")
    basis = ("measured (paired differences)" if c["resolved"] else
             "measured (paired differences): no larger RF does better" if alike else
             f"cannot tell with {n} test micrographs x {seeds} seeds")
    return {"dataset": dataset, "basis": basis, "arch": pick["arch"], "alike": alike,
            "rf_px": int(pick["rf_px"]), "rf_nm": _nm(pick), "resolved": c["resolved"], "best_arch": best["arch"],
            "test_micrographs": n, "seeds": seeds,
            "micrographs_needed": need,
            "best_gain": float(best["diff_mean"]), "best_gain_ci": [float(best["diff_ci_low"]),
                                                                     float(best["diff_ci_high"])],
            "reason": why}


def best_rf(summary: pd.DataFrame, dataset: str, metric: str = "hard_dice") -> dict:
    """From a sweep summary without paired differences: the smallest RF whose mean score is within one standard
    deviation (over seeds) of the best mean."""
    choice = smallest_rf_within_one_std(summary, dataset, metric)
    if choice is None:
        raise UserError(f"no network results for dataset {dataset!r} in the summary: run its sweep first")
    pick, top, tol = choice["pick"], choice["top"], choice["tol"]
    return {"dataset": dataset, "basis": "measured (one seed std)", "arch": pick["arch"], "rf_px": int(pick["rf_px"]),
            "rf_nm": _nm(pick), "score": float(pick[f"{metric}_mean"]), "best_arch": top["arch"],
            "best_score": float(top[f"{metric}_mean"]), "best_std": tol, "metric": metric,
            "reason": (f"{pick['arch']} (RF {int(pick['rf_px'])} px) scores {pick[f'{metric}_mean']:.3f}, within one "
                       f"seed std ({tol:.3f}) of the best, {top['arch']} at {top[f'{metric}_mean']:.3f}; it is the "
                       f"smallest such RF (for intervals, run 'rfseg paired' and pass --paired)")}


def read_evidence(folder) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(paired differences, fingerprints) of a measured series folder, or None when it has none."""
    folder = Path(folder)
    files = folder / "paired.csv", folder / "fingerprints.csv"
    if not all(f.is_file() for f in files):
        return None
    return tuple(pd.read_csv(f) for f in files)


def _nearest_set(fp: dict, fingerprints: pd.DataFrame) -> pd.Series | None:
    """The series set nearest to ``fp`` in (log particle diameter, lab contrast), each scaled by the series' span;
    None when ``fp`` lies outside that span, widened by :data:`SERIES_MARGIN`, on either axis (the series then says
    nothing about it)."""
    d, c = fp.get("diameter_median_nm"), fp.get("lab_contrast")
    if d is None or c is None or any(isinstance(v, float) and math.isnan(v) for v in (d, c)) or d <= 0:
        return None
    logd, lab = np.log(fingerprints["diameter_median_nm"]), fingerprints["lab_contrast"]
    inside = [lo - margin <= v <= hi + margin for v, lo, hi, margin in (
        (np.log(d), logd.min(), logd.max(), np.log(1 + SERIES_MARGIN["diameter"])),
        (c, lab.min(), lab.max(), SERIES_MARGIN["lab_contrast"]))]
    if not all(inside):
        return None
    scale_d = max(np.ptp(logd), np.log(1 + SERIES_MARGIN["diameter"]))
    scale_c = max(np.ptp(lab), SERIES_MARGIN["lab_contrast"])
    dist = ((logd - np.log(d)) / scale_d) ** 2 + ((lab - c) / scale_c) ** 2
    return fingerprints.loc[dist.idxmin()]


def from_fingerprint(fp: dict, patch_px: int = 512, evidence=SERIES) -> dict:
    """An RF from a dataset fingerprint, where no sweep has been measured on the data themselves.

    When the fingerprint lies within the span (of particle size and lab contrast) of the measured series in
    ``evidence``: the choice :func:`from_paired` makes on the nearest set of the series, as an RF in nm. Outside it,
    |amplitude contrast| >= 1 background std: the smallest RF (the paper's low-res result and this project's low-res
    demo agree that the RF barely matters there). Otherwise the only evidence is the paper's real 5 nm Au: an RF of
    about :data:`PAPER_RF_PER_DIAMETER` x the median particle diameter (its 8.4 nm plateau)."""
    px = fp.get("pixel_size_nm")
    contrast = fp.get("abs_amplitude_contrast")
    diam = fp.get("diameter_median_nm")
    if contrast is None or math.isnan(contrast):
        raise UserError(f"fingerprint of {fp.get('dataset')} has no amplitude contrast: cannot recommend")
    options = [(receptive_field(build_model(s)), s.name) for s in sweep(2, patch_px)]

    def fitting(rf_nm_target):
        if not px:
            raise UserError("this choice sizes the RF in nm: the fingerprint needs a pixel size")
        fits = [o for o in options if o[0] * px >= 0.9 * rf_nm_target] or [options[-1]]
        return fits[0]

    series = read_evidence(evidence) if evidence else None
    near = _nearest_set(fp, series[1]) if series else None
    if near is not None:
        measured = from_paired(series[0], near["dataset"])
        rf, name = fitting(measured["rf_nm"]) if measured["resolved"] else options[0]
        why = (f"particles of {diam:.2g} nm at lab contrast {fp['lab_contrast']:.2f} lie within the measured series; "
               f"its nearest set, {near['dataset']} ({near['diameter_median_nm']:.2g} nm, lab contrast "
               f"{near['lab_contrast']:.2f}): {measured['reason']}")
        if measured["resolved"]:
            why += f"; here that is an RF of at least {0.9 * measured['rf_nm']:.2g} nm"
        why += (". The series is simulated; on real low-contrast 5 nm Au the paper measured +0.056 dice from 0.95 to "
                "8.4 nm, so a sweep on one's own micrographs settles it")
        basis = f"fingerprint (measured series, nearest set {near['dataset']}; simulated data)"
    elif contrast >= HIGH_CONTRAST_STD:
        (rf, name), basis = options[0], "fingerprint (paper and this project agree)"
        why = (f"amplitude contrast {contrast:.2f} background std is high: the paper and this project's low-res demo "
               f"found the RF barely matters there, so the smallest RF (sharpest edges, cheapest) is enough")
    else:
        if not px or diam is None or math.isnan(diam):
            raise UserError("low-contrast data outside the measured series need a pixel size and particle "
                            "diameters to size the RF")
        rf, name = fitting(PAPER_RF_PER_DIAMETER * diam)
        basis = "fingerprint (the paper's real-data rule; no measured series covers these data)"
        why = (f"amplitude contrast {contrast:.2f} background std and these particles lie outside the measured "
               f"series, so the only evidence is the paper's: on real low-contrast 5 nm Au larger RFs helped until the "
               f"RF was about {PAPER_RF_PER_DIAMETER} x the particle size ({PAPER_RF_PER_DIAMETER * diam:.2f} nm here)")
    return {"dataset": fp.get("dataset"), "basis": basis, "arch": name, "rf_px": rf,
            "rf_nm": rf * px if px else None, "reason": why}


def recommend(target: str, results=None, fingerprints=(), paired=(), patch_px: int = 512, evidence=SERIES) -> dict:
    """The recommendation for ``target``: a dataset name found in the ``paired`` files (measured, by intervals),
    else in the sweep summary ``results`` (measured, one seed std), else in the fingerprint files; or a fingerprint
    CSV itself. ``evidence`` is the series folder consulted for fingerprints (None: the paper's rule only)."""
    for f in [*paired, *([results] if results else [])]:
        if not Path(f).is_file():
            raise UserError(f"{f}: results file not found")
    if paired:
        table = pd.concat([pd.read_csv(f) for f in paired], ignore_index=True)
        if target in set(table["dataset"]):
            return from_paired(table, target)
    if results:
        summary = pd.read_csv(results)
        if target in set(summary["dataset"]):
            return best_rf(summary, target)
    files = [Path(target)] if str(target).endswith(".csv") else [Path(f) for f in fingerprints]
    rows = [pd.read_csv(f) for f in files if f.is_file()]
    rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if str(target).endswith(".csv") and not rows.empty:
        return from_fingerprint(rows.iloc[0].to_dict(), patch_px, evidence)
    if not rows.empty and target in set(rows["dataset"]):
        return from_fingerprint(rows[rows["dataset"] == target].iloc[0].to_dict(), patch_px, evidence)
    raise UserError(f"unknown dataset {target!r}: give --paired or --results with its sweep, --fingerprints with its "
                    f"fingerprint, or a fingerprint CSV")
