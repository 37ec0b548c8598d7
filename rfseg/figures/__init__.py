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

from rfseg import io  # noqa: E402
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
