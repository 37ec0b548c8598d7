"""The workflow on a real single-node SLURM cluster (with a fake GPU), through the shipped SLURM profile."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from rfseg.stages.train import PAUSE_ENV
from support import SHARED, SNAKEMAKE, THREADS, env_for, same_weights, scratch_copy, wait_for_pause

CLUSTER = SHARED / "slurm" / "local-cluster"

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
#: the results table: every stage up to it (simulate ... train, evaluate, published networks, Fourier, aggregate);
#: figures, ERF and predict run the same way and are left out to keep the test short
TARGET = "results/summary.csv"


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


def _profile(wd):
    """The shipped profile as a user fills it in for this cluster: partition and account; squeue for job status (this
    cluster has no accounting, and the plugin's sacct check would wait forever), checked every 2 s (a one-node test
    cluster answers at once); no rule asks for more threads than a test worker has (support.THREADS: the node's
    CPUs are shared with the other pytest-xdist workers). Memory, runtime and retries stay as shipped."""
    profile = yaml.safe_load((wd / "workflow/profiles/slurm/config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="main", slurm_account="test")
    profile["set-threads"] = {rule: min(n, THREADS) for rule, n in profile["set-threads"].items()}
    profile.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2,
                    "seconds-between-status-checks": 2, "latency-wait": 5})
    (wd / "testprofile").mkdir()
    (wd / "testprofile/config.yaml").write_text(yaml.safe_dump(profile))
    return profile


def test_workflow_runs_as_slurm_jobs_and_a_cancelled_training_job_resumes(cluster, tmp_path):
    """Through the shipped profile: every job is a SLURM job and only training and evaluation get a GPU; a training
    job cancelled mid-run (scancel: SIGTERM, as before a preemption) is retried by Snakemake and resumes from its
    checkpoint, ending with the weights of an uninterrupted run."""
    wd = scratch_copy(tmp_path / "wf")
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["datasets"]["tiny"]["architectures"] = ["n2_p22"]
    cfg["training"]["epochs"] = 3
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    profile = _profile(wd)
    assert profile["retries"] >= 1 and profile["rerun-incomplete"]

    model = "results/tiny/models/n2_p22/seed1/model.pt"
    ref = scratch_copy(tmp_path / "ref")
    (ref / "config.yaml").write_text(yaml.safe_dump(cfg))
    local = subprocess.run([str(SNAKEMAKE), model, "--cores", "2", "--set-threads",
                            f"train={profile['set-threads']['train']}"], cwd=ref, env=env_for(ref),
                           capture_output=True, text=True, timeout=900)
    assert local.returncode == 0, local.stderr[-3000:]

    run = subprocess.Popen([str(SNAKEMAKE), "--profile", "testprofile", TARGET], cwd=wd,
                           env={**env_for(wd, slurm=True), PAUSE_ENV: "1"}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    wait_for_pause(run, wd / "results/tiny/checkpoints/n2_p22/seed1.pt", timeout=900)
    train_log = wd / "results/logs/train/tiny/n2_p22_seed1.log"
    job = re.search(r"slurm_job=(\d+)", train_log.read_text())[1]
    subprocess.run(["scancel", job], check=True, timeout=60)
    out, _ = run.communicate(timeout=1500)
    assert run.returncode == 0, out[-4000:]
    assert (wd / TARGET).is_file()
    retried = train_log.read_text()
    assert re.search(r"slurm_job=(\d+)", retried)[1] != job and "resumed from" in retried, retried[-2000:]
    assert same_weights(ref / model, wd / model)

    logs = sorted((wd / "results/logs").rglob("*.log"))
    assert len(logs) >= 8
    for log in logs:
        m = re.search(r"\[rfseg\] slurm_job=(\S+) cuda_visible_devices=(\S+)", log.read_text())
        assert m and m[1].isdigit(), f"{log} did not run as a SLURM job"
        gpu_rule = log.parent.name in ("train", "evaluate") or log.parent.parent.name in ("train", "evaluate")
        assert (m[2] != "-") == gpu_rule, f"{log}: GPU {m[2]} but GPU expected: {gpu_rule}"
    again = subprocess.run([str(SNAKEMAKE), "--profile", "testprofile", "-n", TARGET], cwd=wd,
                           env=env_for(wd, slurm=True), capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
