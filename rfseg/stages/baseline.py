"""Stages of the Fourier-filter baseline: segment the test patches (``rfseg fourier``) and compare its false
negatives with each network's (``rfseg fn-overlap``, paper Fig. 7/S8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io, metrics
from rfseg.blocks.fourier import (annulus_radii, check_resolvable, false_negative_overlap, fourier_segment,
                                  lattice_spacings)
from rfseg.errors import UserError


def run_baseline(patch_dir, out_dir, dataset: str, *, material: str | None = "Au", spacings_nm=None,
                 radii_px=None, rel_tol: float = 0.05, sigma_nm: float = 0.19, window: bool = False) -> dict:
    """Fourier baseline on the test patches of ``patch_dir``.

    The annulus comes from the material's lattice spacings (or ``spacings_nm``), the pixel size and the patch size,
    widened by ``rel_tol``; ``radii_px`` (lo, hi) overrides it. Writes ``metrics.csv`` (one row, method "fourier"),
    ``masks.tif`` and ``false_negatives.tif`` into ``out_dir``; where the data cannot resolve the lattice the row
    says so in its note and the metrics stay empty. Returns the row."""
    summary = artifacts.read_patch_summary(patch_dir)
    px, size = summary["pixel_size_nm"], summary["patch_size_px"]
    if radii_px is not None and len(radii_px) != 2:
        raise UserError("--radii-px (fourier.radii_px) takes two numbers: lo,hi")
    if radii_px is None:
        spacings_nm = lattice_spacings(material, spacings_nm)
    row = {"dataset": dataset, "method": "fourier", "arch": "fourier", "pixel_size_nm": px, "seed": 0,
           "fold": np.nan if summary.get("fold") is None else summary["fold"]}
    if px is None:
        row["note"] = "skipped: the data have no pixel size, so the lattice annulus cannot be placed"
        artifacts.write_fourier(out_dir, row)
        return row
    r_lo, r_hi = radii_px if radii_px is not None else annulus_radii(spacings_nm, px, size, rel_tol)
    row.update({"annulus_lo_px": r_lo, "annulus_hi_px": r_hi, "sigma_nm": sigma_nm})
    try:
        check_resolvable(r_hi, size, px, spacings_nm or [size * px / r_hi])
    except UserError as e:
        row["note"] = f"skipped: {e}"
        artifacts.write_fourier(out_dir, row)
        return row
    images, masks = artifacts.load_split(patch_dir, "test")
    if masks.sum() == 0:
        raise UserError(f"{patch_dir}: the test split has no particle pixels: add micrographs or change the split")
    pred, _ = fourier_segment(np.asarray(images), r_lo, r_hi, sigma_nm / px, window)
    truth = np.asarray(masks, bool)
    row.update(metrics.segmentation_scores(pred.astype(np.float32), truth))
    row.update({"n_test_patches": len(images), "note": "", "status": "ok",
                **dict(zip(("tp_px", "fp_px", "fn_px"), metrics.confusion(pred, truth)))})
    artifacts.write_fourier(out_dir, row, pred, truth, px)
    return row


FN_COLUMNS = ["dataset", "arch", "seed", "rf_px", "rf_nm", "patch", "network", "jaccard", "fourier_fn_px",
              "network_fn_px"]


def fn_overlap(fourier_dir, eval_dirs, out) -> pd.DataFrame:
    """Per test patch, the Jaccard index of the Fourier false negatives with each evaluated network's; an empty
    table (with its columns) when the baseline was skipped. Written to ``out`` and returned."""
    fourier_fn, _ = artifacts.read_fourier_false_negatives(fourier_dir)
    tables = []
    for d in eval_dirs if fourier_fn is not None else []:
        m = artifacts.read_eval_row(d)
        t = false_negative_overlap(fourier_fn, {m["arch"]: artifacts.read_false_negatives(d)})
        for col in ("rf_nm", "rf_px", "seed", "arch", "dataset"):
            t.insert(0, col, m[col])
        tables.append(t)
    out_df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FN_COLUMNS)
    io.write_csv(out_df, out)
    return out_df
