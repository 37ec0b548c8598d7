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
    seen = {}
    for f in metric_files:
        if Path(f).resolve() in seen:
            raise UserError(f"{f}: given twice (also as {seen[Path(f).resolve()]}): each run would count twice in "
                            f"the mean and std over seeds; give each metrics file once")
        seen[Path(f).resolve()] = f
    rows = pd.concat([pd.read_csv(f).assign(_file=str(f)) for f in metric_files], ignore_index=True)
    keys = [k for k in ("dataset", "method", "arch", "seed", "member", "fold") if k in rows.columns]
    twice = rows[rows.duplicated(keys, keep=False)]
    if len(twice):
        first = twice.iloc[0]
        raise UserError(f"{first['_file']}: the run {', '.join(f'{k} {first[k]}' for k in keys if pd.notna(first[k]))}"
                        f" appears in {len(twice)} metrics files ({', '.join(twice['_file'][:3])}): each run must count "
                        f"once in the mean and std over seeds")
    rows = rows.drop(columns="_file")
    io.write_csv(rows, out_rows)
    summary = summarise(rows)
    io.write_csv(summary, out_summary)
    return summary
