"""Summaries of scores over seeds: mean ± std per dataset, method and architecture, and the RF choice rule."""

from __future__ import annotations

import math

import pandas as pd

METRICS = ["hard_dice", "soft_dice", "global_dice", "iou", "precision", "recall"]
KEYS = ["dataset", "method", "arch", "blocks", "pools", "dilations", "mode", "params", "rf_px", "rf_nm"]


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per (dataset, method, architecture).

    Parameters
    ----------
    rows : DataFrame, one tidy row per dataset x method x architecture x seed (``metrics.csv``)

    Returns
    -------
    DataFrame with the key columns, ``n_seeds`` and ``<metric>_mean`` / ``<metric>_std`` (sample std, ddof 1; NaN
    for one seed), sorted by dataset, method, blocks and RF.
    """
    keys = [k for k in KEYS if k in rows.columns]
    g = rows.fillna({k: "" for k in keys}).groupby(keys, sort=False, dropna=False)
    out = g[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out.insert(0, "n_seeds", g.size())
    return out.reset_index().sort_values(["dataset", "method", "blocks", "rf_px"], na_position="first")


def smallest_rf_within_one_std(summary: pd.DataFrame, dataset: str, metric: str = "hard_dice") -> dict | None:
    """Among the networks of ``dataset`` in a summary, the smallest RF whose mean score is within one standard
    deviation (over seeds) of the best mean. Returns {"pick": row, "top": row, "tol": std} or None."""
    nets = summary[(summary["dataset"] == dataset) & (summary["method"] == "unet")]
    if nets.empty:
        return None
    top = nets.loc[nets[f"{metric}_mean"].idxmax()]
    tol = 0.0 if math.isnan(top[f"{metric}_std"]) else float(top[f"{metric}_std"])
    ok = nets[nets[f"{metric}_mean"] >= top[f"{metric}_mean"] - tol]
    return {"pick": ok.sort_values(["rf_px", "params"]).iloc[0], "top": top, "tol": tol}
