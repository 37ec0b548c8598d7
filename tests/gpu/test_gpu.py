"""Training and prediction on a CUDA GPU: determinism, exact resume, bf16 autocast, agreement with the CPU.

These run only where PyTorch sees a GPU (``pytest -m gpu``); elsewhere they skip with the reason."""

import signal
import subprocess

import numpy as np
import pytest
import torch

from rfseg.blocks.bundle import load_bundle
from rfseg.blocks.inference import compiled, sliding_window_probability
from rfseg.blocks.models import ArchSpec
from rfseg.stages.train import TrainConfig, train
from support import make_patch_dir, start_paused, train_cmd

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch"),
]
CFG = dict(batch_size=8, lr=3e-3, augment="all8", device="cuda")


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gpu_training_is_deterministic_and_resumes_exactly(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(24, 4, 4), size=64)
    spec = ArchSpec(2, (2, 2))
    meta = train(patches, tmp_path / "a", spec, 5, TrainConfig(epochs=4, **CFG))
    train(patches, tmp_path / "b", spec, 5, TrainConfig(epochs=4, **CFG))
    assert meta["device"].startswith("cuda") and meta["autocast"] in ("bfloat16", "float16")
    assert _equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))


def test_gpu_training_preempted_by_sigterm_resumes_bit_identically(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(60, 4, 4), size=64)
    cmd = lambda out: train_cmd(patches, out, 5) + ["--device", "cuda"]  # noqa: E731
    subprocess.run(cmd(tmp_path / "ref"), check=True, capture_output=True)
    proc = start_paused(cmd(tmp_path / "cut"), tmp_path / "cut/checkpoint.pt", 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    done = subprocess.run(cmd(tmp_path / "cut"), check=True, capture_output=True, text=True)
    assert "resumed from" in done.stdout
    assert _equal(_weights(tmp_path / "ref"), _weights(tmp_path / "cut"))


def test_gpu_and_cpu_predictions_agree(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(24, 4, 4), size=64)
    train(patches, tmp_path / "m", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=8, precision="fp32", **CFG))
    image = np.random.default_rng(0).normal(size=(300, 260)).astype(np.float32)
    cpu_model, _ = load_bundle(tmp_path / "m", "cpu")
    gpu_model, _ = load_bundle(tmp_path / "m", "cuda")
    cpu = sliding_window_probability(cpu_model, image, 128, 0.5, device="cpu")
    gpu = sliding_window_probability(gpu_model, image, 128, 0.5, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)  # cuDNN runs float32 convolutions in TF32 by default
    fast = sliding_window_probability(gpu_model, image, 128, 0.5, device="cuda", precision="bf16")
    assert np.abs(fast - cpu).max() < 0.05
    frozen = sliding_window_probability(compiled(gpu_model), image, 128, 0.5, device="cuda")
    np.testing.assert_allclose(frozen, gpu, atol=2e-3)
