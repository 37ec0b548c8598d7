"""Wall time of a finished pipeline run, split by stage, from Snakemake's benchmark files; printed as JSON.

    python -m benchmarks.pipeline_stages [RESULTS_DIR] [--log SNAKEMAKE_LOG]      (default: results)

Jobs of one stage may have run side by side, so a stage's summed seconds can exceed its share of the wall time.
``wall_seconds`` runs from the start of the first job to the end of the last (each benchmark file is written when its
job ends), so it leaves out Snakemake's own start-up. ``machine`` is the machine this command runs on: run it where
the pipeline ran.

With ``--log`` (the run's ``.snakemake/log/*.snakemake.log``), ``cores`` says how well the jobs filled the cores,
every job counted, also those that record no benchmark: the span from the first job's start to the last one's end,
the core-seconds the jobs held (seconds × threads), and the core-seconds no job held (cores × span − held). Snakemake
logs whole seconds, so each figure is good to a second or two per job.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
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


def core_use(log: Path) -> dict:
    """How the jobs of a Snakemake run filled its cores, from the run's log (see the module's docstring)."""
    text = log.read_text()
    cores = re.search(r"^Provided cores: (\d+)$", text, re.M)
    if cores is None:
        raise SystemExit(f"{log}: no 'Provided cores' line: pass the log of a local Snakemake run")
    jobs, now, current = {}, None, None
    for line in text.splitlines():
        if stamp := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            now = datetime.strptime(stamp[1], "%a %b %d %H:%M:%S %Y").timestamp()
        elif re.fullmatch(r"(?:local)?rule \w+:", line):
            current = {"start": now, "threads": 1}
        elif current is not None and (jobid := re.fullmatch(r"\s+jobid: (\d+)", line)):
            jobs[jobid[1]] = current
        elif current is not None and (threads := re.fullmatch(r"\s+threads: (\d+)", line)):
            current["threads"] = int(threads[1])
        elif done := re.fullmatch(r"Finished jobid: (\d+).*", line):
            jobs[done[1]]["end"] = now
    finished = [j for j in jobs.values() if "end" in j]
    if not finished:
        raise SystemExit(f"{log}: no finished job")
    span = max(j["end"] for j in finished) - min(j["start"] for j in finished)
    held = sum((j["end"] - j["start"]) * j["threads"] for j in finished)
    n = int(cores[1])
    return {"log": log.name, "cores": n, "jobs": len(finished), "span_seconds": span, "held_core_seconds": held,
            "idle_core_seconds": n * span - held}


if __name__ == "__main__":
    import os

    from benchmarks import machine

    parser = argparse.ArgumentParser(description="Wall time of a finished pipeline run by stage, as JSON.")
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--log", type=Path, help="the run's Snakemake log: adds how well the jobs filled the cores")
    args = parser.parse_args()
    result = stage_times(args.results)
    if args.log:
        result["cores"] = core_use(args.log)
    print(json.dumps({"machine": machine(os.cpu_count()), **result}, indent=2))
