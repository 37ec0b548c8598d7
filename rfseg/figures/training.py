"""Training and validation curves per architecture (Fig. S1)."""

from __future__ import annotations

import pandas as pd

from rfseg.blocks import bundle
from rfseg.figures import PALETTE, plt, require, save, style


def curves(model_dirs, dataset: str, out) -> None:
    """Training loss, validation loss and validation dice per epoch; one colour per architecture, one line per seed."""
    style()
    runs = []
    for d in model_dirs:
        history = bundle.bundle_files(d)["history"]
        require(history)
        meta = bundle.read_bundle_meta(d)
        runs.append((meta["name"], meta["rf_px"], meta["seed"], pd.read_csv(history)))
    archs = sorted({(rf, name) for name, rf, _, _ in runs})
    colour = {name: PALETTE[i % len(PALETTE)] for i, (_, name) in enumerate(archs)}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    seen = set()
    for name, rf, seed, h in runs:
        label = None if name in seen else f"{name} (RF {rf} px)"
        seen.add(name)
        for ax, col in zip(axes, ["train_loss", "val_loss", "val_dice"]):
            ax.plot(h["epoch"], h[col], color=colour[name], alpha=0.8, label=label if ax is axes[2] else None)
    for ax, title in zip(axes, ["training loss", "validation loss", "validation hard dice (pooled)"]):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{dataset}: training curves (one line per seed)")
    save(fig, out)
