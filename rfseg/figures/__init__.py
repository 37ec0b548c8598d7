"""Figures of the paper regenerated from tidy result files (CSV, TIFF, npy), never from models.

Every function takes file paths and writes one PNG plus an SVG beside it; a missing input is a UserError that names
the file and the stage that makes it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from rfseg.blocks import io  # noqa: E402
from rfseg.errors import UserError  # noqa: E402

PALETTE = sns.color_palette("colorblind")


def style():
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, font_scale=1.1)


def require(*paths) -> None:
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p}: input of this figure is missing: run the stage that writes it first "
                            f"(snakemake makes it on the way to the figure)")


def save(fig, out) -> None:
    """PNG (150 dpi) at ``out`` and an SVG with the same stem, both written atomically."""
    out = Path(out)
    with io.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    with io.atomic_path(out.with_suffix(".svg")) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="svg")
    plt.close(fig)


def log_rf_axis(ax, label: str) -> None:
    """Log-scaled RF axis with plain-number tick labels (0.5, 1, 2, 5 rather than 5x10^-1 ...)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def rf_axis(df):
    """The RF column to plot and its label: nm when the data are calibrated, px otherwise."""
    if "rf_nm" in df and df["rf_nm"].notna().any():
        return "rf_nm", "receptive field (nm)"
    return "rf_px", "receptive field (px)"


#: every figure kind, what it shows and which inputs it needs
FIGURES = {
    "dice-vs-rf": ("hard and soft dice against RF per number of blocks, Fourier band", ("metrics",)),
    "dilation": ("pooling vs dilation at N = 2", ("metrics",)),
    "sizes": ("recovered fraction against RF by particle size", ("metrics", "particles")),
    "examples": ("test segmentations with RF squares", ("patches", "evals")),
    "false-negatives": ("FN maps of Fourier filtering and networks", ("patches", "fourier", "evals")),
    "fn-overlap": ("Jaccard of FN maps, Fourier vs networks", ("fn_overlap",)),
    "edges": ("zoomed edges, pooled vs dilated network (evals: POOLED DILATED)", ("patches", "evals")),
    "curves": ("training and validation curves", ("models",)),
    "erf": ("effective receptive fields", ("erfs", "models")),
    "series": ("paired dice differences against RF across datasets, beside the paper", ("paired", "fingerprints")),
}


def _rf_plots():
    from rfseg.figures import rf

    return rf


def _map_plots():
    from rfseg.figures import maps

    return maps


def _training_plots():
    from rfseg.figures import training

    return training


def draw(kind: str, dataset: str, out, **inputs) -> None:
    """Draw one figure of ``kind`` (see :data:`FIGURES`) from result files into ``out`` (PNG + SVG)."""
    if kind not in FIGURES:
        raise UserError(f"unknown figure {kind!r}: choose one of {', '.join(FIGURES)}")
    missing = [k for k in FIGURES[kind][1] if not inputs.get(k)]
    if missing:
        raise UserError(f"figure {kind} needs --{', --'.join(k.replace('_', '-') for k in missing)}")
    i = inputs
    if kind == "edges" and len(i["evals"]) != 2:
        raise UserError("figure edges needs --evals POOLED_DIR DILATED_DIR")
    if kind == "erf" and len(i["erfs"]) != len(i["models"]):
        raise UserError("figure erf needs one --models folder per --erfs file")
    # each figure imports only its own module: the RF plots need no PyTorch (1.2 s of a 3-s job)
    {
        "dice-vs-rf": lambda: _rf_plots().dice_vs_rf(i["metrics"], dataset, out),
        "dilation": lambda: _rf_plots().dilation_vs_pooling(i["metrics"], dataset, out),
        "sizes": lambda: _rf_plots().size_bins(i["particles"], i["metrics"], dataset, out),
        "examples": lambda: _map_plots().examples(i["patches"], i["evals"], dataset, out),
        "false-negatives": lambda: _map_plots().false_negatives(i["patches"], i["fourier"], i["evals"], dataset, out),
        "fn-overlap": lambda: _map_plots().fn_overlap(i["fn_overlap"], dataset, out),
        "edges": lambda: _map_plots().edges(i["patches"], i["evals"][0], i["evals"][1], dataset, out),
        "curves": lambda: _training_plots().curves(i["models"], dataset, out),
        "erf": lambda: _map_plots().erf_maps(i["erfs"], i["models"], dataset, out),
        "series": lambda: _rf_plots().series(i["paired"], i["fingerprints"], out),
    }[kind]()
