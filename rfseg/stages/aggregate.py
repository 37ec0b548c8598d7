"""Stage: collect metrics rows into one tidy table and its mean ± std over seeds (``rfseg aggregate``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rfseg.blocks import io
from rfseg.blocks.stats import aggregate as summarise
from rfseg.errors import UserError


def aggregate(metric_files, out_rows, out_summary) -> pd.DataFrame:
    """Concatenate ``metrics.csv`` files into ``out_rows`` (one row per dataset x method x architecture x seed) and
    write their mean ± std over seeds to ``out_summary``. Returns the summary."""
    missing = [f for f in metric_files if not Path(f).is_file()]
    if missing:
        raise UserError(f"{missing[0]}: metrics file not found: run the evaluation stage first")
    rows = pd.concat([pd.read_csv(f) for f in metric_files], ignore_index=True)
    io.write_csv(rows, out_rows)
    summary = summarise(rows)
    io.write_csv(summary, out_summary)
    return summary
