"""Dice against receptive field (Fig. 2c/2d, S2-S4), by particle size (Fig. 3), pooling vs dilation (Fig. 4b)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.errors import UserError
from rfseg.figures import PALETTE, log_rf_axis, plt, require, rf_axis, save, style


def _load_rows(metrics_csv, dataset):
    require(metrics_csv)
    rows = pd.read_csv(metrics_csv)
    rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise UserError(f"{metrics_csv} has no rows for dataset {dataset!r}")
    return rows


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


def series(metrics_csv, fingerprint_csvs, out) -> None:
    """The simulated series of configs/series.yaml in three panels: hard dice (mean ± std over seeds) against RF per
    dataset, then each dataset's best RF (smallest within one seed std of the best mean hard dice) against its median
    particle diameter and against its amplitude contrast. The best-RF axis spans the swept RFs, so a dataset whose
    best RF is the smallest one sits on the bottom edge."""
    from rfseg.blocks.stats import aggregate, smallest_rf_within_one_std

    style()
    require(metrics_csv, *fingerprint_csvs)
    summary = aggregate(pd.read_csv(metrics_csv))
    fps = pd.concat([pd.read_csv(f) for f in fingerprint_csvs], ignore_index=True).set_index("dataset")
    nets = summary[(summary["method"] == "unet") & summary["dataset"].isin(fps.index)]
    if nets.empty:
        raise UserError(f"{metrics_csv} has no network results for the fingerprinted datasets")
    rf_col, unit = ("rf_nm", "nm") if nets["rf_nm"].notna().all() else ("rf_px", "px")
    rows = [{"dataset": ds, "best_rf": smallest_rf_within_one_std(summary, ds)["pick"][rf_col],
             **fps.loc[ds].to_dict()}
            for ds in fps.index if (nets["dataset"] == ds).any()]
    t = pd.DataFrame(rows)
    size_col = "diameter_median_nm" if "diameter_median_nm" in t and t["diameter_median_nm"].notna().any() \
        else "diameter_median_px"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for i, (ds, df) in enumerate(nets.groupby("dataset")):
        df = df.sort_values(rf_col)
        axes[0].errorbar(df[rf_col], df["hard_dice_mean"], yerr=df["hard_dice_std"].fillna(0), marker="o",
                         capsize=3, color=PALETTE[i % len(PALETTE)], label=ds)
    log_rf_axis(axes[0], f"receptive field ({unit})")
    axes[0].set_ylabel("test hard dice (mean ± std over seeds)")
    axes[0].legend(fontsize=8)
    axes[0].grid(True, which="both", alpha=0.3)
    span = nets[rf_col].min(), nets[rf_col].max()
    pad = 0.05 * (span[1] - span[0]) or 0.5
    for ax, col, label in [(axes[1], size_col, f"median particle diameter ({size_col.rsplit('_', 1)[1]})"),
                           (axes[2], "abs_amplitude_contrast", "|amplitude contrast| (background std)")]:
        ax.scatter(t[col], t["best_rf"], color=PALETTE[0], s=40)
        for j, (_, r) in enumerate(t.sort_values(col).iterrows()):  # alternate label heights: close points stay legible
            ax.annotate(r["dataset"], (r[col], r["best_rf"]), fontsize=8, xytext=(4, 6 + 12 * (j % 3)),
                        textcoords="offset points")
        ax.set_ylim(span[0] - pad, span[1] + pad)
        ax.margins(x=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel(f"best RF ({unit}): smallest within 1 std of the top")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Which receptive field does each dataset need?")
    save(fig, out)
