"""Summarise a pytest JUnit report; exit 1 if no test ran or the core suite was entirely skipped."""

import sys
import xml.etree.ElementTree as ET
from collections import Counter

CORE = ("tests.blocks", "tests/blocks", "blocks.", "tests.stages", "tests/stages", "stages.")

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
outcome, reasons, core_ran = Counter(), Counter(), 0
for case in cases:
    skipped = case.find("skipped")
    failed = case.find("failure") is not None or case.find("error") is not None
    kind = "skipped" if skipped is not None else "failed" if failed else "passed"
    outcome[kind] += 1
    if skipped is not None:
        reasons[(skipped.get("message") or "no reason").split("\n")[0][:80]] += 1
    name = case.get("classname", "") + "/" + case.get("file", "")
    if kind != "skipped" and any(c in name for c in CORE):
        core_ran += 1
executed = outcome["passed"] + outcome["failed"]
why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common())
print(f"CI: {outcome['passed']} passed, {outcome['failed']} failed, {outcome['skipped']} skipped"
      + (f" ({why})" if why else ""))
if executed == 0:
    print("CI: no test ran", file=sys.stderr)
    sys.exit(1)
if core_ran == 0:
    print("CI: the core suite (tests/blocks, tests/stages) did not run: not collected, or every test skipped",
          file=sys.stderr)
    sys.exit(1)
