"""Test support: fixtures written through the artifact owners, the installed command line, and the workflow run in
a scratch copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from rfseg.blocks import artifacts
from rfseg.blocks.particles import size_statistics
from rfseg.stages.train import PAUSE_ENV

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FORMATS = SHARED / "data" / "formats"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
#: CPU threads of a test's own training and inference: one per pytest-xdist worker, as the workers already fill the
#: cores (two threads beside a busy worker made a small training 3-4x slower: OpenMP threads wait by spinning)
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------------ fixtures
def make_patch_dir(root, n=(24, 8, 8), size=48, pixel_size_nm=0.1, seed=0, per_micrograph=None):
    """A patch folder (through rfseg.blocks.artifacts): dark noisy background with one brighter disk per patch; with
    ``per_micrograph``, a patch index too, that many consecutive patches of a split per source micrograph."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    splits = {}
    for split, count in zip(artifacts.SPLITS, n):
        imgs, masks = [], []
        for _ in range(count):
            cy, cx, r = *rng.uniform(8, size - 8, 2), rng.uniform(4, 7)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            imgs.append((rng.normal(0, 0.5, (size, size)) + 1.5 * m).astype(np.float32))
            masks.append(m.astype(np.uint8))
        splits[split] = (np.stack(imgs), np.stack(masks))
    sizes = {split: size_statistics(masks.astype(bool), pixel_size_nm) for split, (_, masks) in splits.items()}
    index = None
    if per_micrograph:
        index = pd.DataFrame([{"split": split, "index_in_split": i, "source_image": f"{split}{i // per_micrograph}.tif",
                               "group": f"{split}{i // per_micrograph}", "row_px": 0, "col_px": 0}
                              for split, count in zip(artifacts.SPLITS, n) for i in range(count)])
    artifacts.write_patch_folder(root, splits, {"dataset": "toy", "patch_size_px": size,
                                                "pixel_size_nm": pixel_size_nm, "min_particle_px": 0,
                                                "n_images": sum(n), "particle_sizes": sizes}, index)
    return Path(root)


def run_cli(*args, cwd=None, check_rc=None, env=None):
    """Run the installed `rfseg` command in a subprocess; returns CompletedProcess with text output."""
    exe = Path(sys.executable).with_name("rfseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rfseg.cli"]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr + proc.stdout
    return proc


def one_line_error(proc, needle: str) -> None:
    """A user mistake: exit 2, one line on stderr naming ``needle``, no traceback, and every option the line names
    is one the command that printed it has (or the command it names: 'rfseg preprocess --flat-field')."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for command, option in options_named(proc.stderr):
        assert option in command_options(command), f"{option} is not an option of rfseg {command}: {proc.stderr}"


def options_named(line: str) -> list[tuple[str, str]]:
    """(command, option) for each --option in an error line of ``rfseg COMMAND: error: ...``: an option belongs to
    the command named last before it in the same parenthesis or clause ('rfseg preprocess --x'), else to the
    printing command."""
    m = re.match(r"rfseg ([\w-]+): error: ", line)
    if not m:
        return []
    from rfseg.cli import COMMANDS

    printing, out = m[1], []
    names = "|".join(sorted(map(re.escape, COMMANDS), key=len, reverse=True))
    for clause in re.split(r"[();]", line[m.end():]):
        command = printing
        for token in re.finditer(rf"rfseg ({names})\b|(--[a-z][\w-]*)", clause):
            if token[1]:
                command = token[1]
            else:
                out.append((command, token[2]))
    return out


_OPTIONS: dict[str, set[str]] = {}


def command_options(command: str) -> set[str]:
    """Every option string of ``rfseg COMMAND`` (from its parser)."""
    if command not in _OPTIONS:
        from rfseg.cli import build_parser

        parser = build_parser([command])
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        _OPTIONS[command] = {s for a in sub._actions for s in a.option_strings} | {"--help"}
    return _OPTIONS[command]


# ------------------------------------------------------------------------------------------------------ training
def train_cmd(patches, out, epochs):
    return [sys.executable, "-m", "rfseg.cli", "train", "--patches", str(patches), "--arch", "n2_p22", "--seed", "3",
            "--epochs", str(epochs), "--batch-size", "8", "--lr", "0.003", "--augment", "random8",
            "--threads", "1", "--out", str(out)]


def start_paused(cmd, checkpoint, epoch, timeout=300):
    """Start training (``cmd``) that stops after the checkpoint of ``epoch`` and waits (rfseg.stages.train.PAUSE_ENV),
    so the test interrupts it at a known point instead of racing it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, PAUSE_ENV: str(epoch)})
    wait_for_pause(proc, checkpoint, timeout)
    checkpoint.with_name(checkpoint.name + ".paused").unlink()
    return proc


def wait_for_pause(proc, checkpoint, timeout=300):
    """Wait until training started with PAUSE_ENV (by ``proc``, directly or through a workflow) has written the
    checkpoint ``checkpoint`` of its pause epoch and waits; fails if ``proc`` ends first (with its output, if piped)."""
    flag = checkpoint.with_name(checkpoint.name + ".paused")
    t0 = time.time()
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()[0] if proc.stdout else "ended before training paused"
        assert time.time() - t0 < timeout, "training did not reach the pause"
        time.sleep(0.2)


def same_weights(a, b) -> bool:
    """Whether two ``model.pt`` files hold the same tensors, bit for bit."""
    import torch

    wa, wb = (torch.load(p, weights_only=True) for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------------------------------------------ workflow
def scratch_copy(dest: Path, config="configs/test-tiny.yaml") -> Path:
    """The workflow, package and resources copied to ``dest`` with ``config`` as its config.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "rfseg", dest / "rfseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "resources", dest / "resources")
    shutil.copytree(ROOT / "configs", dest / "configs")
    shutil.copy(ROOT / config, dest / "config.yaml")
    return dest


# make run's folder with an scontrol that fails at once (see the script): hides SLURM from local workflow runs
NO_SLURM_BIN = ROOT / "workflow" / "profiles" / "default" / "no-slurm"


def env_for(wd: Path, slurm: bool = False) -> dict:
    """Environment of a workflow run in ``wd``; without ``slurm``, SLURM's ``scontrol`` is hidden (NO_SLURM_BIN)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(wd)  # the copied package shadows the installed one, so tests can edit it
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    if not slurm:
        env["PATH"] = f"{NO_SLURM_BIN}:{env['PATH']}"
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


# ------------------------------------------------------------------------ networks pickled whole, as the lab did
class Block(nn.Module):
    def __init__(self, cin, cout, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv_add = nn.Conv2d(cin, cout, 1)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.conv_add(x))


class ReceptiveFieldUNet(nn.Module):
    """The N = 2 layout of the receptive-field paper's repository (down1, pool1, ..., up1 deepest, final_conv),
    written here from its published description: no file of that repository is used."""

    def __init__(self, pools=(4, 4), dilations=(1, 1, 1)):
        super().__init__()
        self.pools_ = pools
        self.down1, self.pool1 = Block(1, 4, dilations[0]), nn.MaxPool2d(pools[0], pools[0])
        self.down2, self.pool2 = Block(4, 8, dilations[1]), nn.MaxPool2d(pools[1], pools[1])
        self.bottleneck = Block(8, 16, dilations[2])
        self.up1, self.up2 = Block(8 + 16, 8, dilations[1]), Block(4 + 8, 4, dilations[0])
        self.final_conv = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        s1 = self.down1(x)
        s2 = self.down2(self.pool1(s1))
        b = self.bottleneck(self.pool2(s2))
        u = self.up1(torch.cat([s2, nn.functional.interpolate(b, scale_factor=self.pools_[1])], 1))
        u = self.up2(torch.cat([s1, nn.functional.interpolate(u, scale_factor=self.pools_[0])], 1))
        return self.final_conv(u)


class Foreign(nn.Module):
    """A network with a layer the family does not have (a linear layer)."""

    def __init__(self):
        super().__init__()
        self.final_conv = nn.Linear(4, 2)


def save_as_main(model, path, class_name="UNet_MaxPool", legacy=False):
    """torch.save a whole module whose classes pickle as __main__.<name>, as the lab's notebooks did; ``legacy``:
    in PyTorch's pre-1.6 (non-zip) format, as the receptive-field paper's final networks are."""
    main = sys.modules["__main__"]
    classes = {class_name: type(model), "ResidualBlock": Block}
    saved = {}
    for name, cls in classes.items():
        saved[name] = (cls.__module__, cls.__qualname__)
        cls.__module__, cls.__qualname__ = "__main__", name
        setattr(main, name, cls)
    try:
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for name, cls in classes.items():
            cls.__module__, cls.__qualname__ = saved[name]
            delattr(main, name)
