"""The workflow on a real single-node SLURM cluster (with a fake GPU), through the shipped SLURM profile."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from support import SHARED
from support import SNAKEMAKE, env_for, scratch_copy

CLUSTER = SHARED / "slurm" / "local-cluster"

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    if not CLUSTER.is_file():
        pytest.skip(f"no local SLURM helper at {CLUSTER}")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a local SLURM cluster needs root and apt-get to install slurm-wlm")
    start = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    assert start.returncode == 0, start.stdout + start.stderr
    yield start.stdout
    subprocess.run([str(CLUSTER), "stop"], capture_output=True, text=True, timeout=300)


def test_workflow_runs_as_slurm_jobs_with_gpus_for_training(cluster, tmp_path):
    wd = scratch_copy(tmp_path / "wf")
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["datasets"]["tiny"]["architectures"] = ["n2_p22"]
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    # The shipped profile, with this test cluster's partition and the status flags it needs (no accounting).
    profile = yaml.safe_load((wd / "workflow/profiles/slurm/config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="main", slurm_account="test", mem_mb=500, runtime=10)
    for rule in profile["set-resources"].values():
        rule.update(mem_mb=500, runtime=10)
    profile["set-threads"] = {k: 1 for k in profile["set-threads"]}
    profile.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2,
                    "latency-wait": 5, "jobs": 2, "retries": 0})
    (wd / "testprofile").mkdir()
    (wd / "testprofile/config.yaml").write_text(yaml.safe_dump(profile))
    proc = subprocess.run([str(SNAKEMAKE), "--profile", "testprofile"], cwd=wd, env=env_for(wd),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (wd / "results/summary.csv").is_file()

    logs = sorted((wd / "results/logs").rglob("*.log"))
    assert len(logs) >= 8
    for log in logs:
        m = re.search(r"\[rfseg\] slurm_job=(\S+) cuda_visible_devices=(\S+)", log.read_text())
        assert m and m[1].isdigit(), f"{log} did not run as a SLURM job"
        gpu_rule = log.parent.name in ("train", "evaluate") or log.parent.parent.name in ("train", "evaluate")
        assert (m[2] != "-") == gpu_rule, f"{log}: GPU {m[2]} but GPU expected: {gpu_rule}"
    again = subprocess.run([str(SNAKEMAKE), "--profile", "testprofile", "-n"], cwd=wd, env=env_for(wd),
                           capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
