"""CI fails loudly when its core suite did not run (.ci/summary.py reads pytest's JUnit report)."""

import subprocess
import sys

import pytest

from support import ROOT


def _report(tmp_path, cases):
    def case(i, classname, reason):
        skipped = f'<skipped message="{reason}"/>' if reason else ""
        return f'<testcase classname="{classname}" name="t{i}">{skipped}</testcase>'

    body = "".join(case(i, c, r) for i, (c, r) in enumerate(cases))
    path = tmp_path / "junit.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite>{body}</testsuite></testsuites>')
    return subprocess.run([sys.executable, str(ROOT / ".ci/summary.py"), str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("cases,ok,needle", [
    ([], False, "no test ran"),
    ([("tests.blocks.test_io", "no fixtures"), ("tests.stages.test_train", "no fixtures")], False, "no test ran"),
    ([("tests.workflow.test_plan", ""), ("tests.stages.test_train", "skipped: no torch")], False, "core suite"),
    ([("tests.blocks.test_io", ""), ("tests.gpu.test_gpu", "no CUDA GPU")], True, "1 x no CUDA GPU"),
])
def test_ci_summary(tmp_path, cases, ok, needle):
    proc = _report(tmp_path, cases)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    assert needle in proc.stdout + proc.stderr
    assert proc.stdout.startswith("CI: ")
