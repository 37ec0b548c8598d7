"""One CPU kind's speed against the project's targets, joined from its stored benchmark files, as JSON.

    python -m benchmarks.kinds amd-epyc-bf16 > benchmarks/out/kind_amd-epyc-bf16.json

Reads, for the kind, what the benchmarks stored in ``benchmarks/out`` (each run on a machine of that kind):

- ``demo_<kind>.json``: ``python -m benchmarks.pipeline_stages`` after ``make run`` from a fresh clone (the demo's
  pipeline wall time and job-seconds);
- ``suite_<kind>.json``: ``python -m benchmarks.suite`` on the JUnit report of ``bash .ci/run``;
- ``epoch_<kind>.json``: ``python -m benchmarks.epoch`` (a whole epoch against the plain reference, small set);
- ``predict_job_<kind>.json``: ``python -m benchmarks.predict_job`` with the demo's network on 16 micrographs of
  4096² (``rfseg predict`` at its defaults, whole job, ``--compile auto``).

A measurement not stored for the kind is null. ``machine`` names the kind, the CPU generations (family/model/stepping
and clock) the files recorded, and the commits and the latest date of the files it joins; ``measured`` says which
file, commit and date gave each figure. Hosts of one kind can differ in speed: compare figures of one host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

#: the targets (docs/explanation/performance.md): the demo's pipeline and the suite at most, the rest at least
TARGETS = {"demo_pipeline_seconds": 540, "suite_seconds": 900, "epoch_speedup": 3.0, "inference_mpx_per_s": 8.0}


def _figures(name: str, data: dict) -> dict:
    if name == "demo":
        return {"demo_pipeline_seconds": data["wall_seconds"], "demo_job_seconds": data["job_seconds_total"]}
    if name == "suite":
        return {"suite_seconds": data["wall_seconds"], "suite_tests": data["tests"]}
    if name == "epoch":
        (small,) = [s for s in data["sets"] if s["set"] == "small"]
        return {"epoch_speedup": round(small["speedup_whole_epoch"], 2)}
    (auto,) = [r for r in data["runs"] if r["compile"] == "auto"]
    return {"inference_mpx_per_s": round(auto["job_mpx_per_s"], 2)}


def kind_summary(kind: str, out: Path = OUT) -> dict:
    """The figures of ``kind`` from its stored files in ``out``; a missing file leaves its figures null."""
    row = {"demo_pipeline_seconds": None, "demo_job_seconds": None, "suite_seconds": None, "suite_tests": None,
           "epoch_speedup": None, "inference_mpx_per_s": None}
    measured, machines = {}, []
    for name in ("demo", "suite", "epoch", "predict_job"):
        path = out / f"{name}_{kind}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        record = data["machine"]
        if record.get("kind") != kind:
            raise SystemExit(f"{path}: measured on {record.get('kind')!r}, not {kind!r}; store it under that kind")
        figures = _figures(name, data)
        row.update(figures)
        machines.append(record)
        for key in figures:
            measured[key] = {"file": path.name, "commit": record.get("commit"), "date": record.get("date")}
    if not machines:
        raise SystemExit(f"no benchmark files for the CPU kind {kind!r} in {out}: demo_{kind}.json, suite_{kind}.json, "
                         f"epoch_{kind}.json or predict_job_{kind}.json")
    row["targets_met"] = sum(row[k] is not None and (row[k] <= v if k.endswith("seconds") else row[k] >= v)
                             for k, v in TARGETS.items())
    row["targets_measured"] = sum(row[k] is not None for k in TARGETS)
    commits = ", ".join(dict.fromkeys(str(m.get("commit")) for m in machines))
    hosts = ", ".join(dict.fromkeys(f"{m['cpu_family_model_stepping']} at {m['cpu_mhz']} MHz" for m in machines
                                    if m.get("cpu_family_model_stepping")))
    first = machines[0]
    machine = {"kind": kind, "cpu": first.get("cpu"), "cores": first.get("cores"), "flags": first.get("flags"),
               "family_model_stepping": hosts or None, "commit": commits,
               "date": max(str(m.get("date")) for m in machines)}
    return {"machine": machine, **row, "measured": measured}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.kinds KIND   (e.g. amd-epyc-bf16)")
    print(json.dumps(kind_summary(sys.argv[1]), indent=2))
