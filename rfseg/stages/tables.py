"""Stages that write tables: the architecture family (paper Table 2, ``rfseg arch-table``) and the datasets
(Table 1, ``rfseg dataset-table``)."""

from __future__ import annotations

import pandas as pd

from rfseg.blocks import artifacts, io
from rfseg.blocks.models import describe, join_ints, sweep


def architecture_table(blocks, max_rf_px: int, out) -> pd.DataFrame:
    """Every pooling combination from {2, 4, 8} per N in ``blocks`` whose RF is at most ``max_rf_px``: name,
    spec, parameters, RF in px."""
    rows = [describe(s) for n in blocks for s in sweep(n, max_rf_px)]
    df = pd.DataFrame(rows).drop(columns=["pixel_size_nm", "rf_nm"])
    for col in ("pools", "dilations"):
        df[col] = df[col].map(join_ints)
    io.write_csv(df, out)
    return df


def dataset_table(patch_dirs, out) -> pd.DataFrame:
    """One row per patch folder: dataset, pixel size, patch size, micrographs, patches and particle fraction per
    split."""
    rows = []
    for d in patch_dirs:
        s = artifacts.read_patch_summary(d)
        row = {"dataset": s["dataset"], "pixel_size_nm": s["pixel_size_nm"], "patch_size_px": s["patch_size_px"],
               "micrographs": s["n_images"]}
        for split, v in s["splits"].items():
            row[f"{split}_patches"] = v["patches"]
            row[f"{split}_particle_fraction"] = v["particle_fraction"]
        rows.append(row)
    df = pd.DataFrame(rows)
    io.write_csv(df, out)
    return df
