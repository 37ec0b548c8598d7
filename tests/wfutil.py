"""Run the workflow in a scratch copy of the repository (with its own copy of the rfseg package)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def scratch_copy(dest: Path, config="configs/test-tiny.yaml") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "rfseg", dest / "rfseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "resources", dest / "resources")
    shutil.copy(ROOT / config, dest / "config.yaml")
    return dest


def env_for(wd: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(wd)  # the copied package shadows the installed one, so tests can edit it
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def snakemake(wd: Path, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SNAKEMAKE), "--cores", "2", *map(str, args)], cwd=wd, env=env_for(wd),
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table into {rule: count} (without the total)."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table, counts = True, {}
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                if m[1] == "total":
                    in_table = False
                else:
                    counts[m[1]] = int(m[2])
    return counts
