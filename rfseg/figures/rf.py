"""Dice against receptive field (Fig. 2c/2d, S2-S4), by particle size (Fig. 3), pooling vs dilation (Fig. 4b)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks.stats import pool_folds
from rfseg.errors import UserError
from rfseg.figures import PALETTE, log_rf_axis, plt, require, rf_axis, save, style


def _load_rows(metrics_csv, dataset):
    """The dataset's rows of a metrics.csv, one per run: the folds of a cross-validated run pooled."""
    require(metrics_csv)
    rows = pd.read_csv(metrics_csv)
    rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise UserError(f"{metrics_csv} has no rows for dataset {dataset!r}")
    return pool_folds(rows)


def _flagged(rows) -> pd.Series:
    return rows["status"].fillna("ok").ne("ok") if "status" in rows else pd.Series(False, index=rows.index)


def _dilated(rows) -> pd.Series:
    """True for networks with any dilation above 1 (rows of other methods have no dilations: False)."""
    return rows["dilations"].fillna("1").astype(str).map(lambda d: set(d.split(",")) != {"1"})


def _mean_std(df, x, metric):
    g = df.groupby(["arch", x], as_index=False)[metric].agg(["mean", "std", "count"])
    return g.sort_values(x)


def dice_vs_rf(metrics_csv, dataset: str, out) -> None:
    """Hard and soft dice (mean ± std over seeds) against RF on a log axis, one line per number of blocks N;
    the Fourier baseline as a grey band and each published real-data network as a band of its mean ± std over
    members. Dilated and avg-pool variants are left to their own figure."""
    style()
    rows = _load_rows(metrics_csv, dataset)
    nets = rows[(rows["method"] == "unet") & (rows["mode"] == "max") & ~_dilated(rows)]
    x, xlabel = rf_axis(nets)
    fourier = rows[(rows["method"] == "fourier") & rows["hard_dice"].notna()]
    published = rows[rows["method"] == "published"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, metric in zip(axes, ["hard_dice", "soft_dice"]):
        for i, (n, df) in enumerate(nets.groupby("blocks")):
            s = _mean_std(df, x, metric)
            ax.errorbar(s[x], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, color=PALETTE[i],
                        label=f"N = {int(n)}")
        for _, f in fourier.iterrows():
            ax.axhspan(f[metric] - 0.003, f[metric] + 0.003, color="0.5", alpha=0.5)
            ax.text(nets[x].min(), f[metric], " Fourier filter", va="bottom",
                    color="0.3", fontsize=9)
        for j, (name, df) in enumerate(published.groupby("arch")):
            m, sd = df[metric].mean(), (df[metric].std() if len(df) > 1 else 0.0)
            colour = PALETTE[(len(PALETTE) - 1 - j) % len(PALETTE)]
            ax.axhspan(m - max(sd, 0.003), m + max(sd, 0.003), color=colour, alpha=0.25)
            ax.text(nets[x].max(), m, f"published {name} (real data, n={len(df)}) ", va="bottom", ha="right",
                    color=colour, fontsize=8)
        bad = nets[_flagged(nets)]
        if len(bad):  # runs that predicted nothing or everything, or never learned: not comparable
            ax.scatter(bad[x], bad[metric], marker="x", s=70, color="#d62728", zorder=5,
                       label=f"flagged run ({len(bad)}; summary.csv status)")
        log_rf_axis(ax, xlabel)
        ax.set_title(f"{dataset}: {metric.replace('_', ' ')}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("dice (mean ± std over seeds)")
    axes[0].legend(title="blocks")
    save(fig, out)


def dilation_vs_pooling(metrics_csv, dataset: str, out) -> None:
    """Hard dice against RF for N=2 networks that grow the RF by pooling and by dilation (Fig. 4b)."""
    style()
    rows = _load_rows(metrics_csv, dataset)
    nets = rows[(rows["method"] == "unet") & (rows["blocks"] == 2)].copy()
    dilated = _dilated(nets)
    if not dilated.any():
        raise UserError(f"dataset {dataset!r} has no dilated architecture: nothing to compare")
    x, xlabel = rf_axis(nets)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, df) in enumerate([("max-pooling (pools vary)", nets[~dilated & (nets["mode"] == "max")]),
                                     ("dilation (pools 2,2 fixed)", nets[dilated])]):
        s = _mean_std(df, x, "hard_dice")
        ax.errorbar(s[x], s["mean"], yerr=s["std"].fillna(0), marker="os"[i], capsize=3, color=PALETTE[i],
                    label=label)
    log_rf_axis(ax, xlabel)
    ax.set_ylabel("hard dice (mean ± std over seeds)")
    ax.set_title(f"{dataset}: pooling vs dilation, N = 2")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, out)


def size_bins(particle_csvs, metrics_csv, dataset: str, out, n_bins: int = 3) -> None:
    """Per-particle recovered fraction against RF for particle-size terciles (Fig. 3), with the size histograms."""
    style()
    require(*particle_csvs)
    parts = pd.concat([pd.read_csv(p) for p in particle_csvs], ignore_index=True)
    rows = _load_rows(metrics_csv, dataset)
    arch_rf = rows[rows["method"] == "unet"].drop_duplicates("arch").set_index("arch")
    x, xlabel = rf_axis(arch_rf)
    parts = parts[parts["arch"].isin(arch_rf.index)]
    size_col = "diameter_nm" if parts["diameter_nm"].notna().any() else "diameter_px"
    unit = "nm" if size_col == "diameter_nm" else "px"
    first = parts[parts["arch"] == parts["arch"].iloc[0]]
    first = first[first["seed"] == first["seed"].iloc[0]]
    edges = np.unique(np.quantile(first[size_col], np.linspace(0, 1, n_bins + 1)))
    parts["size_bin"] = pd.cut(parts[size_col], edges, include_lowest=True)
    parts[x] = parts["arch"].map(arch_rf[x])
    per_seed = parts.groupby(["size_bin", "arch", x, "seed"], observed=True)["recovered_fraction"].mean()
    agg = per_seed.groupby(["size_bin", "arch", x], observed=True).agg(["mean", "std"]).reset_index()
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    for i, (b, df) in enumerate(agg.groupby("size_bin", observed=True)):
        df = df.sort_values(x)
        ax.errorbar(df[x], df["mean"], yerr=df["std"].fillna(0), marker="o", capsize=3, color=PALETTE[i],
                    label=f"{b.left:.3g}-{b.right:.3g} {unit}")
        hx.hist(first.loc[pd.cut(first[size_col], edges, include_lowest=True) == b, size_col], bins=8,
                color=PALETTE[i], alpha=0.7)
    log_rf_axis(ax, xlabel)
    ax.set_ylabel("recovered fraction per particle")
    ax.set_title(f"{dataset}: by particle size")
    ax.legend(title="equivalent diameter")
    ax.grid(True, which="both", alpha=0.3)
    hx.set_xlabel(f"equivalent diameter ({unit})")
    hx.set_ylabel("test particles")
    save(fig, out)


#: the paper's N = 2 result on real 5 nm Au (FACTS: 0.727 ± 0.004 at 0.95 nm, 0.783 ± 0.007 at 8.4 nm, 5 seeds), as a
#: difference from its smallest RF
PAPER_5NM_GAIN = ((0.95, 0.0), (8.4, 0.783 - 0.727))


def series(paired_csvs, fingerprint_csvs, out) -> None:
    """A series of datasets (configs/series.yaml) in two panels. Left: per dataset, hard dice minus the smallest
    RF's, paired by seed and test micrograph, with the 95 % bootstrap interval (``rfseg paired``), against RF, beside
    the paper's 5 nm curve. Right: the hard dice itself (mean over seeds and test micrographs), with each dataset's
    published real-data networks as a dashed line."""
    style()
    require(*paired_csvs, *fingerprint_csvs)
    paired = pd.concat([pd.read_csv(f) for f in paired_csvs], ignore_index=True)
    fps = pd.concat([pd.read_csv(f) for f in fingerprint_csvs], ignore_index=True).set_index("dataset")
    nets = paired[paired["method"] == "unet"]
    if nets.empty:
        raise UserError(f"{paired_csvs[0]}: no trained networks in the paired differences")
    rf_col, unit = ("rf_nm", "nm") if nets["rf_nm"].notna().all() else ("rf_px", "px")
    fig, (dx, ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    groups = list(nets.groupby("dataset", sort=False))
    for i, (ds, df) in enumerate(groups):
        df, color = df.sort_values(rf_col), PALETTE[i % len(PALETTE)]
        dodge = 1 + 0.025 * (i - (len(groups) - 1) / 2)  # side by side on the log axis, so the intervals stay legible
        label = ds
        if ds in fps.index and pd.notna(fps.loc[ds].get("diameter_median_nm")):
            label += f" ({fps.loc[ds, 'diameter_median_nm']:.2g} nm, lab contrast {fps.loc[ds, 'lab_contrast']:.2f})"
        err = [df["diff_mean"] - df["diff_ci_low"], df["diff_ci_high"] - df["diff_mean"]]
        dx.errorbar(df[rf_col] * dodge, df["diff_mean"], yerr=err, marker="o", capsize=3, color=color, label=label)
        ax.plot(df[rf_col], df["score_mean"], marker="o", color=color, label=ds)
        pub = paired[(paired["dataset"] == ds) & (paired["method"] == "published")]
        if not pub.empty:
            ax.axhline(pub["score_mean"].mean(), color=color, ls="--", lw=1)
    if unit == "nm":
        x, y = zip(*PAPER_5NM_GAIN)
        dx.plot(x, y, "k--", marker="s", label="paper, real 5 nm Au (N = 2, 5 seeds)")
    dx.axhline(0, color="grey", lw=0.8)
    for a in (dx, ax):
        log_rf_axis(a, f"receptive field ({unit})")
        a.grid(True, which="both", alpha=0.3)
    dx.set_ylabel("hard dice minus smallest RF's (95 % interval)")
    dx.legend(fontsize=7)
    ax.set_ylabel("test hard dice (mean over seeds and micrographs)")
    ax.set_title("dashed: the published real-data networks", fontsize=9)
    fig.suptitle("Does a larger receptive field help? Paired differences per dataset")
    save(fig, out)
