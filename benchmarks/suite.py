"""The test suite's time on this machine, from the JUnit report of a run, as JSON.

    bash .ci/run                                         # prints "generated xml file: .../junit.xml"
    python -m benchmarks.suite .../junit.xml > benchmarks/out/suite_<kind>.json

Reports the run's wall time (pytest's own, without setting up the venv), how many tests passed, failed and were
skipped, the test-seconds summed over all workers, and the slowest tests, with the machine it ran on. Run it on the
machine that ran the suite, from the same commit.
"""

from __future__ import annotations

import argparse
import json
import os
import xml.etree.ElementTree as ET

from benchmarks import machine


def summarise(report, slowest: int = 20) -> dict:
    """Outcome counts, wall and summed seconds and the ``slowest`` tests of a pytest JUnit ``report`` (a path)."""
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = ("skipped" if case.find("skipped") is not None else
                   "failed" if case.find("failure") is not None or case.find("error") is not None else "passed")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0)})
    counts = {kind: sum(c["outcome"] == kind for c in cases) for kind in ("passed", "failed", "skipped")}
    top = sorted(cases, key=lambda c: -c["seconds"])[:slowest]
    return {**counts, "tests": len(cases), "wall_seconds": round(float(suite.get("time")), 1),
            "test_seconds_total": round(sum(c["seconds"] for c in cases), 1),
            "slowest": [{"test": c["test"], "seconds": round(c["seconds"], 1)} for c in top]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="pytest's JUnit XML report of the run (--junitxml)")
    ap.add_argument("--slowest", type=int, default=20)
    args = ap.parse_args(argv)
    print(json.dumps({**summarise(args.report, args.slowest), "machine": machine(os.cpu_count())}, indent=2))


if __name__ == "__main__":
    main()
