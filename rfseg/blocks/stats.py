"""Summaries of scores over seeds: mean ± std per dataset, method and architecture, and the RF choice rule."""

from __future__ import annotations

import math

import pandas as pd

from rfseg.blocks.metrics import scores_from_counts

METRICS = ["hard_dice", "soft_dice", "global_dice", "iou", "precision", "recall", "calibration_error"]
KEYS = ["dataset", "method", "arch", "blocks", "pools", "dilations", "mode", "params", "rf_px", "rf_nm"]


#: metrics that are means over test patches: pooled over folds weighted by each fold's test patches
PER_PATCH = ["hard_dice", "soft_dice", "calibration_error"]
#: pooled-pixel metrics, recomputed from the summed pixel counts
PIXEL_COUNTS = ["tp_px", "fp_px", "fn_px"]


def _pooled(g: pd.DataFrame) -> dict:
    """One run's folds as one row: every test patch of every fold counted once."""
    out = g.iloc[0].to_dict()
    w = g["n_test_patches"].astype(float)
    for m in PER_PATCH:
        if m in g:  # calibration error: the patch-weighted mean of the folds' (their pixel counts are equal)
            out[m] = float((g[m] * w).sum() / w.sum())
    if all(c in g for c in PIXEL_COUNTS):
        tp, fp, fn = (float(g[c].sum()) for c in PIXEL_COUNTS)
        out.update({**scores_from_counts(tp, fp, fn), "tp_px": tp, "fp_px": fp, "fn_px": fn})
    for c in ("n_test_patches", "n_particles_true", "n_particles_pred"):
        if c in g:
            out[c] = g[c].sum()
    if "status" in g:
        bad = [f"fold {int(f)}: {s[len('flagged: '):]}" for f, s in zip(g["fold"], g["status"].fillna("ok"))
               if s != "ok"]
        out["status"] = "ok" if not bad else "flagged: " + "; ".join(bad)
    out["n_folds"], out["fold"] = len(g), float("nan")
    return out


def pool_folds(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of a cross-validated dataset (one per fold, ``fold`` set) pooled into one row per run (dataset x
    method x architecture x seed, and member for published networks): per-patch metrics weighted by the folds'
    test patches, pooled-pixel metrics from the summed counts, counts summed, a run flagged when any fold is.
    Rows without a fold pass unchanged. The result has ``n_folds`` (1 without cross-validation)."""
    rows = rows.copy()
    if "fold" not in rows or rows["fold"].isna().all():
        return rows.assign(n_folds=1)
    keys = [k for k in [*KEYS, "seed", "member"] if k in rows.columns]
    cv, plain = rows[rows["fold"].notna()], rows[rows["fold"].isna()]
    pooled = [_pooled(g) for _, g in cv.fillna({k: "" for k in keys}).groupby(keys, sort=False, dropna=False)]
    pooled = pd.DataFrame(pooled).replace({k: {"": float("nan")} for k in keys})
    return pd.concat([plain.assign(n_folds=1), pooled], ignore_index=True)


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per (dataset, method, architecture).

    Parameters
    ----------
    rows : DataFrame, one tidy row per dataset x method x architecture x seed (``metrics.csv``); under
        cross-validation one per fold too, pooled first (:func:`pool_folds`)

    Returns
    -------
    DataFrame with the key columns, ``n_seeds``, ``n_folds``, ``<metric>_mean`` / ``<metric>_std`` (sample std,
    ddof 1; NaN for one seed), ``n_flagged`` and ``status`` ("ok", or "flagged: k of n runs (...)": runs that
    predicted nothing or everything, or whose loss never fell), sorted by dataset, method, blocks and RF.
    """
    rows = pool_folds(rows)
    keys = [k for k in KEYS if k in rows.columns]
    g = rows.fillna({k: "" for k in keys}).groupby(keys, sort=False, dropna=False)
    out = g[[m for m in METRICS if m in rows.columns]].agg(["mean", "std"])  # older runs lack newer metrics
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out.insert(0, "n_seeds", g.size())
    out.insert(1, "n_folds", g["n_folds"].max())
    status = rows["status"].fillna("ok") if "status" in rows else pd.Series("ok", index=rows.index)
    flagged = status.ne("ok").groupby([rows[k].fillna("") for k in keys], sort=False, dropna=False)
    out["n_flagged"] = flagged.sum().astype(int).to_numpy()

    def summary(df):
        bad = df[df["_status"] != "ok"]
        if bad.empty:
            return "ok"
        return (f"flagged: {len(bad)} of {len(df)} runs (" +
                "; ".join(f"seed {s}: {t[len('flagged: '):]}" for s, t in zip(bad["seed"], bad["_status"])) + ")")

    with_status = rows.assign(_status=status).fillna({k: "" for k in keys})
    out["status"] = [summary(df) for _, df in with_status.groupby(keys, sort=False, dropna=False)]
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


def reference_arch(rows: pd.DataFrame) -> str:
    """The network the paired differences are taken against: the smallest RF (fewest parameters on a tie)."""
    nets = rows[rows["method"] == "unet"].sort_values(["rf_px", "params"])
    if nets.empty:
        raise ValueError("no trained network among the rows")
    return str(nets["arch"].iloc[0])


def _score_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-micrograph scores as a (seed x micrograph) table, the mean where a pair repeats."""
    return rows.pivot_table(index="seed", columns="micrograph", values="score", aggfunc="mean")


def _resampled_means(grid, seed_draws, micrograph_draws):
    """The mean of a (seeds, micrographs) array over each bootstrap draw of seeds and micrographs (one row each)."""
    import numpy as np

    return np.array([grid[np.ix_(s, m)].mean() for s, m in zip(seed_draws, micrograph_draws)])


def paired_differences(scores: pd.DataFrame, reference: str, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> pd.DataFrame:
    """Score of every method and architecture minus the reference's, paired over test micrographs and seeds, with a
    bootstrap interval over both.

    Parameters
    ----------
    scores : DataFrame, one row per (method, arch, seed, micrograph) with columns ``method``, ``arch``, ``seed``,
        ``micrograph``, ``score`` and the key columns of :data:`KEYS` that are present (``rf_px``, ``rf_nm``, ...).
        Every row group must cover the same micrographs.
    reference : str
        The trained architecture (method "unet") every difference is taken against.
    resamples : int
        Bootstrap resamples. Each draws the micrographs and the seeds with replacement; an architecture trained with
        the reference's seeds is paired seed by seed (the same draw for both), any other (a published network's
        members) draws its own.
    level : float
        Coverage of the percentile interval.

    Returns
    -------
    DataFrame, one row per method and architecture (the reference included, with difference 0): ``n_seeds``,
    ``n_micrographs``, ``paired_by_seed``, ``score_mean`` (mean over seeds and micrographs), ``diff_mean``,
    ``diff_ci_low``, ``diff_ci_high`` and ``ci_half_width`` (half the interval's width).

    Raises
    ------
    ValueError
        When the reference is missing or a group does not cover the reference's micrographs.
    """
    import numpy as np

    ref_rows = scores[(scores["method"] == "unet") & (scores["arch"] == reference)]
    if ref_rows.empty:
        raise ValueError(f"the reference {reference!r} has no scores")
    ref = _score_grid(ref_rows)
    ref_seeds, micrographs = ref.index.tolist(), ref.columns
    ref = ref.to_numpy()
    rng = np.random.default_rng(seed)
    draw_m = rng.integers(0, len(micrographs), (resamples, len(micrographs)))
    draw_s = rng.integers(0, len(ref_seeds), (resamples, len(ref_seeds)))
    ref_boot = _resampled_means(ref, draw_s, draw_m)
    keys = [k for k in KEYS if k in scores.columns]
    out = []
    for key, df in scores.groupby(keys, sort=False, dropna=False):
        g = _score_grid(df)
        seeds = g.index.tolist()
        if set(g.columns) != set(micrographs) or g.isna().any().any():
            raise ValueError(f"{dict(zip(keys, key))['arch']} was not scored on the reference's micrographs")
        a = g[micrographs].to_numpy()
        paired = seeds == ref_seeds
        if paired:
            boot = _resampled_means(a, draw_s, draw_m) - ref_boot
        else:
            own = np.random.default_rng([seed, len(out)]).integers(0, len(seeds), (resamples, len(seeds)))
            boot = _resampled_means(a, own, draw_m) - ref_boot
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        out.append({**dict(zip(keys, key)), "reference": reference, "n_seeds": len(seeds),
                    "n_micrographs": len(micrographs), "paired_by_seed": paired, "score_mean": float(a.mean()),
                    "diff_mean": float(a.mean() - ref.mean()), "diff_ci_low": float(lo), "diff_ci_high": float(hi),
                    "ci_half_width": float((hi - lo) / 2)})
    return pd.DataFrame(out).sort_values(["method", "rf_px"], ascending=[False, True], ignore_index=True)


def cheapest_within_interval(paired: pd.DataFrame) -> dict:
    """The RF choice from paired differences: the best larger architecture (largest mean gain over the reference, the
    smallest RF) and the smallest RF whose mean gain reaches the best's lower interval bound. When the best's
    interval includes 0, no RF is measurably better than the reference, and the reference (the smallest RF) is the
    choice; ``worse`` says whether every larger RF scores measurably lower (every interval below 0).

    Returns {"pick": row, "best": row, "resolved": bool, "worse": bool}, rows of ``paired`` (method "unet")."""
    nets = paired[paired["method"] == "unet"].sort_values(["rf_px", "params"])
    reference = nets["reference"].iloc[0] if "reference" in nets else nets["arch"].iloc[0]
    others = nets[nets["arch"] != reference]
    if others.empty:
        return {"pick": nets.iloc[0], "best": nets.iloc[0], "resolved": False, "worse": False}
    best = others.loc[others["diff_mean"].idxmax()]
    worse = bool((others["diff_ci_high"] < 0).all())
    resolved = bool(best["diff_ci_low"] > 0) or worse
    pick = nets[nets["diff_mean"] >= best["diff_ci_low"]].iloc[0] if best["diff_ci_low"] > 0 else nets.iloc[0]
    return {"pick": pick, "best": best, "resolved": resolved, "worse": worse}


def gain_difference(scores_a: pd.DataFrame, scores_b: pd.DataFrame, arch: str, reference: str,
                    resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """How much more ``arch`` gains over ``reference`` on dataset A than on dataset B: (A's paired gain) minus (B's),
    with a bootstrap interval.

    The two datasets have their own micrographs and their own trainings, so each resample draws A's micrographs and
    seeds and B's independently; within a dataset the gain stays paired by seed and micrograph, as in
    :func:`paired_differences`.

    Parameters
    ----------
    scores_a, scores_b : DataFrame, per-micrograph scores of one dataset each (``rfseg paired --per-micrograph``:
        columns ``method``, ``arch``, ``seed``, ``micrograph``, ``score``); trained networks (method "unet") only
        are used.
    arch, reference : str
        The architecture whose gain is compared, and the one it is taken against, present in both.

    Returns
    -------
    dict with ``gain_a``, ``gain_b`` (mean paired gains), ``diff_mean`` (gain_a - gain_b), ``diff_ci_low``,
    ``diff_ci_high``, and ``n_seeds_a/b``, ``n_micrographs_a/b``.

    Raises
    ------
    ValueError
        When an architecture is missing from a dataset or not scored on the reference's seeds and micrographs.
    """
    import numpy as np

    rng = np.random.default_rng(seed)

    def gains(scores, name):
        nets = scores[scores["method"] == "unet"]
        grids = []
        for a in (arch, reference):
            rows = nets[nets["arch"] == a]
            if rows.empty:
                raise ValueError(f"dataset {name}: no scores of {a}")
            grids.append(_score_grid(rows))
        g, r = grids
        if list(g.index) != list(r.index) or set(g.columns) != set(r.columns) or g.isna().any().any():
            raise ValueError(f"dataset {name}: {arch} was not scored on {reference}'s seeds and micrographs")
        d = (g[r.columns] - r).to_numpy()  # (seeds, micrographs) of paired gains
        s = rng.integers(0, d.shape[0], (resamples, d.shape[0]))
        m = rng.integers(0, d.shape[1], (resamples, d.shape[1]))
        return float(d.mean()), _resampled_means(d, s, m), d.shape

    gain_a, boot_a, (seeds_a, micro_a) = gains(scores_a, "A")
    gain_b, boot_b, (seeds_b, micro_b) = gains(scores_b, "B")
    lo, hi = np.quantile(boot_a - boot_b, [(1 - level) / 2, (1 + level) / 2])
    return {"gain_a": gain_a, "gain_b": gain_b, "diff_mean": gain_a - gain_b, "diff_ci_low": float(lo),
            "diff_ci_high": float(hi), "n_seeds_a": seeds_a, "n_micrographs_a": micro_a, "n_seeds_b": seeds_b,
            "n_micrographs_b": micro_b}
