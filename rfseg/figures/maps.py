"""Image figures: example segmentations with RF squares (Fig. 5/6), false-negative maps against Fourier filtering
(Fig. 7) and their overlap (S8), edges of pooled vs dilated networks (Fig. 8), effective receptive fields (S9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tifffile
from matplotlib.patches import Rectangle

from rfseg.blocks import artifacts, bundle
from rfseg.blocks.metrics import dice_per_patch
from rfseg.figures import PALETTE, plt, require, save, style


def _eval(eval_dir):
    return artifacts.read_eval(eval_dir)


def _test_split(patch_dir):
    images, masks = artifacts.load_split(patch_dir, "test", mmap=False)
    return images, masks.astype(bool)


def _pick_patches(masks, k):
    """k test patches with the most particle pixels (the most informative to look at)."""
    return list(np.argsort(-masks.reshape(len(masks), -1).sum(1))[:k])


def _panel_grid(patch_dir, eval_dirs, n_examples):
    """Test split, evaluations sorted by RF, the chosen patches, and a grid with two leading columns + one per
    network."""
    images, masks = _test_split(patch_dir)
    evals = sorted((_eval(d) for d in eval_dirs), key=lambda e: e[0]["rf_px"])
    idx = _pick_patches(masks, n_examples)
    ncol = 2 + len(evals)
    fig, axes = plt.subplots(len(idx), ncol, figsize=(2.6 * ncol, 2.6 * len(idx)), squeeze=False)
    return images, masks, evals, idx, fig, axes


def _no_ticks(axes):
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def _rf_label(m):
    nm = f", {m['rf_nm']:.2g} nm" if pd.notna(m.get("rf_nm")) else ""
    return f"{m['arch']} (RF {int(m['rf_px'])} px{nm})"


def examples(patch_dir, eval_dirs, dataset: str, out, n_examples: int = 3) -> None:
    """Test patches with the RF of each network drawn as a square, then each network's hard segmentation with its
    per-patch hard dice in the corner (columns: networks sorted by RF)."""
    style()
    images, masks, evals, idx, fig, axes = _panel_grid(patch_dir, eval_dirs, n_examples)
    for r, i in enumerate(idx):
        h, w = images[i].shape
        axes[r, 0].imshow(images[i], cmap="gray")
        for c, (m, _) in enumerate(evals):
            rf = min(int(m["rf_px"]), h)
            axes[r, 0].add_patch(Rectangle((w / 2 - rf / 2, h / 2 - rf / 2), rf, rf, fill=False, lw=1.5,
                                           color=PALETTE[c]))
        axes[r, 1].imshow(masks[i], cmap="gray")
        for c, (m, prob) in enumerate(evals):
            pred = prob[i] > 0.5
            axes[r, 2 + c].imshow(pred, cmap="gray")
            d = dice_per_patch(pred[None], masks[i][None])[0]
            axes[r, 2 + c].text(0.97, 0.97, f"{d:.3f}", transform=axes[r, 2 + c].transAxes, ha="right", va="top",
                                color=PALETTE[c], fontsize=10, bbox=dict(facecolor="white", alpha=0.8, lw=0))
    axes[0, 0].set_title("test patch, RF squares")
    axes[0, 1].set_title("ground truth")
    for c, (m, _) in enumerate(evals):
        axes[0, 2 + c].set_title(_rf_label(m), color=PALETTE[c], fontsize=9)
    _no_ticks(axes)
    fig.suptitle(f"{dataset}: example test segmentations (hard dice per patch)")
    save(fig, out)


def false_negatives(patch_dir, fourier_dir, eval_dirs, dataset: str, out, n_examples: int = 2) -> None:
    """False-negative maps of Fourier filtering and of each network on the same test patches (Fig. 7)."""
    style()
    fourier_fn, note = artifacts.read_fourier_false_negatives(fourier_dir)
    images, masks, evals, idx, fig, axes = _panel_grid(patch_dir, eval_dirs, n_examples)
    for r, i in enumerate(idx):
        axes[r, 0].imshow(images[i], cmap="gray")
        if fourier_fn is None:
            axes[r, 1].text(0.5, 0.5, note, ha="center", va="center", wrap=True, fontsize=8)
        else:
            axes[r, 1].imshow(fourier_fn[i], cmap="magma")
        for c, (m, prob) in enumerate(evals):
            axes[r, 2 + c].imshow(masks[i] & (prob[i] <= 0.5), cmap="magma")
    axes[0, 0].set_title("test patch")
    axes[0, 1].set_title("Fourier filter FN")
    for c, (m, _) in enumerate(evals):
        axes[0, 2 + c].set_title(_rf_label(m) + " FN", fontsize=9)
    _no_ticks(axes)
    fig.suptitle(f"{dataset}: false negatives (bright = particle pixel missed)")
    save(fig, out)


def fn_overlap(fn_overlap_csv, dataset: str, out) -> None:
    """Jaccard index between the Fourier false negatives and each network's, per test patch (S8)."""
    style()
    require(fn_overlap_csv)
    t = pd.read_csv(fn_overlap_csv).dropna(subset=["jaccard"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if t.empty:
        ax.text(0.5, 0.5, "no overlap to show: the Fourier baseline\nwas skipped for this dataset (see its log)",
                ha="center", va="center")
        ax.set_axis_off()
        save(fig, out)
        return
    order = t.drop_duplicates("arch").sort_values("rf_px")["arch"].tolist()
    import seaborn as sns

    sns.boxplot(data=t, x="arch", y="jaccard", order=order, ax=ax, color=PALETTE[0], fliersize=2)
    sns.stripplot(data=t, x="arch", y="jaccard", order=order, ax=ax, color="0.2", size=2.5, alpha=0.6)
    ax.set_xlabel("network (by receptive field)")
    ax.set_ylabel("Jaccard(FN Fourier, FN network)")
    ax.set_title(f"{dataset}: overlap of false negatives with Fourier filtering")
    save(fig, out)


def edges(patch_dir, pooled_dir, dilated_dir, dataset: str, out) -> None:
    """A zoomed test patch: particle probability of a pooled and a dilated network of similar RF (Fig. 8)."""
    style()
    images, masks = _test_split(patch_dir)
    (mp, pp), (md, pd_) = _eval(pooled_dir), _eval(dilated_dir)
    i = _pick_patches(masks, 1)[0]
    h, w = images[i].shape
    ys, xs = np.nonzero(masks[i])
    # zoom on the particle edge nearest the patch centre
    k = np.argmin((ys - h / 2) ** 2 + (xs - w / 2) ** 2)
    half = max(16, h // 8)
    y0, x0 = int(np.clip(ys[k] - half, 0, h - 2 * half)), int(np.clip(xs[k] - half, 0, w - 2 * half))
    crop = np.s_[y0:y0 + 2 * half, x0:x0 + 2 * half]
    panels = [("test patch (zoom)", images[i][crop], "gray"), ("ground truth", masks[i][crop], "gray"),
              (_rf_label(mp), pp[i][crop], "viridis"), (_rf_label(md), pd_[i][crop], "viridis")]
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    for ax, (title, img, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap == "viridis" else None, vmax=1 if cmap == "viridis" else None)
        ax.contour(masks[i][crop], [0.5], colors="r", linewidths=0.8)
        ax.set_title(title, fontsize=9)
    _no_ticks(axes)
    fig.suptitle(f"{dataset}: particle edges, pooling vs dilation (probability; red: true edge)")
    save(fig, out)


def erf_maps(erf_tifs, model_dirs, dataset: str, out) -> None:
    """Effective receptive field maps (log scale) with the theoretical RF square (S9)."""
    style()
    require(*erf_tifs)
    items = sorted(((tifffile.imread(t), bundle.read_bundle_meta(m)) for t, m in zip(erf_tifs, model_dirs)),
                   key=lambda e: e[1]["rf_px"])
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 3.4), squeeze=False)
    for ax, (erf, meta) in zip(axes[0], items):
        h, w = erf.shape
        ax.imshow(np.log10(np.clip(erf, 1e-4, None)), cmap="inferno", vmin=-4, vmax=0)
        rf = meta["rf_px"]
        ax.add_patch(Rectangle((w / 2 - rf / 2, h / 2 - rf / 2), rf, rf, fill=False, color="c", lw=1.5))
        ax.set_title(f"{meta['name']}: RF {rf} px", fontsize=9)
    _no_ticks(axes)
    fig.suptitle(f"{dataset}: effective receptive field, log10 |d out / d in| (cyan: theoretical RF)")
    save(fig, out)
