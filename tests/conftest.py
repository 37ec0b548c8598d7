import os
import shutil

import numpy as np
import pytest

from support import FORMATS, THREADS, make_patch_dir, run_cli, scratch_copy, snakemake


@pytest.fixture(scope="session", autouse=True)
def _threads_per_worker():
    """Code a test runs in-process without setting threads uses support.THREADS (one per pytest-xdist worker), not
    PyTorch's default of one per core, and keeps the memory it frees as the rfseg commands do."""
    import torch

    from rfseg.cli import reuse_freed_memory

    torch.set_num_threads(THREADS)
    reuse_freed_memory()  # as every rfseg command's process does, so in-process training runs as the commands do


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def _done_workflow_dir(tmp_path_factory):
    """The tiny configuration (configs/test-tiny.yaml) run to completion once per test run, in a scratch copy of the
    repository. Under pytest-xdist the workers share it: the first to need it builds it, the others wait."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder, above the workers'
    wd = root / "done_workflow"
    with FileLock(str(root / "done_workflow.build.lock")):
        if not (wd / "finished").exists():
            shutil.rmtree(wd, ignore_errors=True)
            scratch_copy(wd)
            proc = snakemake(wd)
            assert proc.returncode == 0, proc.stderr[-3000:]
            (wd / "finished").touch()
    return wd


@pytest.fixture
def done_workflow(_done_workflow_dir):
    """The finished tiny workflow, held by one test at a time (tests dry-run variants of it or edit its code, and
    must leave it as they found it)."""
    from filelock import FileLock

    with FileLock(str(_done_workflow_dir.parent / "done_workflow.use.lock")):
        yield _done_workflow_dir


@pytest.fixture(scope="session")
def formats_dir():
    if not FORMATS.is_dir():
        pytest.skip(f"format fixtures not present: {FORMATS} (GPL-3 test data kept outside the project)")
    return FORMATS


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory):
    """Two bundles (seeds 1 and 2) of n2_p22 trained on bright disks in noise at 0.25 nm/px."""
    from rfseg.blocks.models import ArchSpec
    from rfseg.stages.train import TrainConfig, train

    root = tmp_path_factory.mktemp("models")
    patches = make_patch_dir(root / "p", n=(24, 4, 4), size=64, pixel_size_nm=0.25)
    cfg = TrainConfig(epochs=20, batch_size=8, lr=3e-3, augment="random8", precision="fp32")
    return [train(patches, root / f"m{s}", ArchSpec(2, (2, 2)), s, cfg) and root / f"m{s}" for s in (1, 2)]


def disks(size=256, seed=0):
    """(image float32 (size, size), truth bool): five bright discs of radius 6 px in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for cy, cx in [(40, 40), (40, 200), (128, 128), (210, 60), (200, 200)]:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 6**2
    return (rng.normal(0, 0.5, (size, size)) + 1.5 * mask).astype(np.float32), mask
