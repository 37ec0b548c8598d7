"""Does the best receptive field grow as contrast falls? The paper's claim, tested on a finished RF series, as JSON.

    python -m benchmarks.series_contrast                              # results/series, the three 5 nm doses
    python -m benchmarks.series_contrast --results results/series --sets au5nm_80e,au5nm_423e,au5nm_884e

For each set (ordered by its measured lab contrast, ``fingerprint.csv``): every larger RF's paired gain over the
smallest with its 95 % interval (``paired.csv``) and the RF ``rfseg recommend`` would pick from them. Then, for every
pair of sets and every larger RF, the gain on the lower-contrast set minus the gain on the higher-contrast one, with a
bootstrap interval that draws each set's test micrographs and seeds independently
(:func:`rfseg.blocks.stats.gain_difference`). The claim predicts positive differences: ``reading`` says "agrees" when
the interval lies above 0, "contradicts" when below, and "cannot tell" when it holds 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd

from benchmarks import machine


def reading(low: float, high: float) -> str:
    """What an interval of (gain at lower contrast - gain at higher contrast) says about the paper's claim."""
    return "agrees" if low > 0 else "contradicts" if high < 0 else "cannot tell"


def analyse(results: Path, sets: list[str], resamples: int = 2000) -> dict:
    from rfseg.blocks.stats import cheapest_within_interval, gain_difference

    paired, scores, contrast = {}, {}, {}
    for name in sets:
        folder = results / name
        missing = [f for f in ("paired.csv", "per_micrograph.csv", "fingerprint.csv") if not (folder / f).is_file()]
        if missing:
            raise SystemExit(f"error: {folder}: no {', '.join(missing)}: run the series first (snakemake --cores all "
                             f"--configfile configs/series.yaml) or give --results")
        paired[name] = pd.read_csv(folder / "paired.csv")
        scores[name] = pd.read_csv(folder / "per_micrograph.csv", dtype={"seed": str})
        contrast[name] = float(pd.read_csv(folder / "fingerprint.csv")["lab_contrast"].iloc[0])
    order = sorted(sets, key=contrast.get)
    out_sets = []
    for name in order:
        nets = paired[name][paired[name]["method"] == "unet"].sort_values("rf_px")
        choice = cheapest_within_interval(nets)
        out_sets.append({
            "set": name, "lab_contrast": round(contrast[name], 4), "reference": str(nets["reference"].iloc[0]),
            "pick": str(choice["pick"]["arch"]), "pick_rf_nm": round(float(choice["pick"]["rf_nm"]), 3),
            "resolved": choice["resolved"],
            "gains": [{"arch": str(r.arch), "rf_nm": round(float(r.rf_nm), 3), "gain": round(float(r.diff_mean), 4),
                       "ci_low": round(float(r.diff_ci_low), 4), "ci_high": round(float(r.diff_ci_high), 4)}
                      for r in nets.iloc[1:].itertuples()]})
    comparisons = []
    for low, high in itertools.combinations(order, 2):  # low: the lower-contrast set
        for g in out_sets[0]["gains"]:
            r = gain_difference(scores[low], scores[high], g["arch"], out_sets[0]["reference"], resamples=resamples)
            comparisons.append({
                "arch": g["arch"], "rf_nm": g["rf_nm"], "lower_contrast": low, "higher_contrast": high,
                "gain_lower_contrast": round(r["gain_a"], 4), "gain_higher_contrast": round(r["gain_b"], 4),
                "diff_mean": round(r["diff_mean"], 4), "diff_ci_low": round(r["diff_ci_low"], 4),
                "diff_ci_high": round(r["diff_ci_high"], 4),
                "reading": reading(r["diff_ci_low"], r["diff_ci_high"])})
    return {"results": str(results), "sets": out_sets, "comparisons": comparisons, "resamples": resamples}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results/series"))
    ap.add_argument("--sets", default="au5nm_80e,au5nm_423e,au5nm_884e",
                    help="comma-separated sets of the series, at least two")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    if len(sets) < 2:
        ap.error("--sets: give at least two sets to compare")
    print(json.dumps({**analyse(args.results, sets, args.resamples), "machine": machine(1)}, indent=1))


if __name__ == "__main__":
    main()
