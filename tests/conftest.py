import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FORMATS = SHARED / "data" / "formats"


def run_cli(*args, cwd=None, check_rc=None):
    """Run the installed `rfseg` command in a subprocess; returns CompletedProcess with text output."""
    exe = Path(sys.executable).with_name("rfseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rfseg.cli"]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def formats_dir():
    if not FORMATS.is_dir():
        pytest.skip(f"format fixtures not present: {FORMATS} (GPL-3 test data kept outside the project)")
    return FORMATS
