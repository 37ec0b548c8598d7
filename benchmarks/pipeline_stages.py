"""Wall time of a finished pipeline run, split by stage, from Snakemake's benchmark files; printed as JSON.

    python -m benchmarks.pipeline_stages [RESULTS_DIR]      (default: results)

Jobs of one stage may have run side by side, so a stage's summed seconds can exceed its share of the wall time.
``wall_seconds`` runs from the start of the first job to the end of the last (each benchmark file is written when its
job ends), so it leaves out Snakemake's own start-up. ``machine`` is the machine this command runs on: run it where
the pipeline ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def stage_times(results: Path) -> dict:
    rows = []
    for f in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = f.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        t = pd.read_csv(f, sep="\t")
        rows.append({"stage": stage, "seconds": float(t["s"].iloc[-1]), "max_rss_mb": float(t["max_rss"].iloc[-1]),
                     "end": f.stat().st_mtime})
    if not rows:
        raise SystemExit(f"no benchmark files under {results}/benchmarks: run the pipeline first")
    df = pd.DataFrame(rows)
    g = df.groupby("stage").agg(jobs=("seconds", "size"), seconds_total=("seconds", "sum"),
                                seconds_max=("seconds", "max"), max_rss_mb=("max_rss_mb", "max"))
    wall = float(df["end"].max() - (df["end"] - df["seconds"]).min())
    return {"results": str(results), "stages": g.round(2).reset_index().to_dict("records"),
            "job_seconds_total": round(float(df["seconds"].sum()), 1), "wall_seconds": round(wall, 1)}


if __name__ == "__main__":
    import os

    from benchmarks import machine

    result = stage_times(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))
    print(json.dumps({"machine": machine(os.cpu_count()), **result}, indent=2))
