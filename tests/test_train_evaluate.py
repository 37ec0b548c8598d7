import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import make_patch_dir
from rfseg import train as train_mod
from rfseg.errors import UserError
from rfseg.evaluate import aggregate, evaluate
from rfseg.metrics import dice_per_patch, particle_recovery, pooled_scores
from rfseg.models import ArchSpec
from rfseg.train import TrainConfig, load_model, train

FAST = dict(batch_size=8, lr=3e-3, augment="random8", precision="fp32")


def test_metrics_hand_computed():
    t = np.zeros((2, 4, 4), bool)
    t[0, :2, :2] = True  # 4 px
    p = np.zeros_like(t)
    p[0, :2, :1] = True  # 2 px, both right
    d = dice_per_patch(p, t)
    assert d[0] == pytest.approx((2 * 2 + 1) / (2 + 4 + 1))
    assert d[1] == 1.0  # empty prediction of an empty patch: perfect with smoothing
    s = pooled_scores(p, t)
    assert s["global_dice"] == pytest.approx(4 / 6) and s["precision"] == 1 and s["recall"] == 0.5
    assert s["iou"] == pytest.approx(0.5)
    assert pooled_scores(np.zeros(4, bool), np.zeros(4, bool))["global_dice"] == 1.0
    soft = dice_per_patch(np.full((1, 2, 2), 0.5), np.ones((1, 2, 2)))
    assert soft[0] == pytest.approx((2 * 2 + 1) / (2 + 4 + 1))
    rec = particle_recovery(p, t, pixel_size_nm=0.5)
    assert len(rec) == 1 and rec[0]["recovered_fraction"] == 0.5
    assert rec[0]["diameter_nm"] == pytest.approx(np.sqrt(16 / np.pi) * 0.5)


def test_tiny_dataset_trains_and_evaluates(tmp_path):
    patches = make_patch_dir(tmp_path / "p")
    meta = train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=25, **FAST), threads=2)
    assert meta["params"] == 8074 and meta["rf_px"] == 44
    assert (tmp_path / "run/history.csv").exists()
    row = evaluate(tmp_path / "run", patches, tmp_path / "eval", "toy")
    assert row["hard_dice"] > 0.9 and row["global_dice"] > 0.9
    assert set(pd.read_csv(tmp_path / "eval/metrics.csv").columns) >= {
        "dataset", "method", "arch", "blocks", "pools", "dilations", "params", "rf_px", "rf_nm", "seed",
        "hard_dice", "soft_dice", "global_dice", "iou", "precision", "recall"}
    model, _ = load_model(tmp_path / "run")
    assert isinstance(torch.load(tmp_path / "run/model.pt", weights_only=True), dict)


def test_same_data_order_for_every_architecture(tmp_path, monkeypatch):
    patches = make_patch_dir(tmp_path / "p", n=(10, 3, 3), size=128)
    seen = {}
    real = train_mod.dihedral_batch

    def spy(x, ks):
        seen.setdefault(current, []).append((x.flatten()[:64].clone(), ks.clone()))
        return real(x, ks)

    monkeypatch.setattr(train_mod, "dihedral_batch", spy)
    for current in ("n2_p22", "n2_p44", "n2_p22_d112"):
        train(patches, tmp_path / current, ArchSpec.from_name(current), 7, TrainConfig(epochs=2, **FAST))
    a, b, c = seen["n2_p22"], seen["n2_p44"], seen["n2_p22_d112"]
    assert len(a) == len(b) == len(c) > 0
    for (xa, ka), (xb, kb), (xc, kc) in zip(a, b, c):
        assert torch.equal(xa, xb) and torch.equal(ka, kb) and torch.equal(xa, xc) and torch.equal(ka, kc)


def _train_cmd(patches, out, epochs):
    return [sys.executable, "-m", "rfseg.cli", "train", "--patches", str(patches), "--arch", "n2_p22", "--seed", "3",
            "--epochs", str(epochs), "--batch-size", "8", "--lr", "0.003", "--augment", "random8",
            "--threads", "1", "--out", str(out)]


def _wait_for_epoch(out, epoch, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        hist = out / "checkpoint.pt"
        if hist.exists():
            try:
                if torch.load(hist, weights_only=False)["epoch"] >= epoch:
                    return
            except Exception:
                pass
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_and_resume_is_bit_identical(tmp_path, sig):
    patches = make_patch_dir(tmp_path / "p", n=(40, 4, 4), size=64)
    epochs = 6
    subprocess.run(_train_cmd(patches, tmp_path / "ref", epochs), check=True, capture_output=True)
    proc = subprocess.Popen(_train_cmd(patches, tmp_path / "cut", epochs), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(tmp_path / "cut", 2, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "checkpoint of the last finished epoch is kept" in out
    assert not (tmp_path / "cut/model.pt").exists()
    assert not list((tmp_path / "cut").glob(".*part*"))
    done = subprocess.run(_train_cmd(patches, tmp_path / "cut", epochs), check=True, capture_output=True, text=True)
    assert "resumed from" in done.stdout
    ref = torch.load(tmp_path / "ref/model.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut/model.pt", weights_only=True)
    assert ref.keys() == cut.keys() and all(torch.equal(ref[k], cut[k]) for k in ref)
    assert pd.read_csv(tmp_path / "ref/history.csv").drop(columns="seconds").equals(
        pd.read_csv(tmp_path / "cut/history.csv").drop(columns="seconds"))


def test_bad_model_inputs(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), size=96)
    train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=1, **FAST))
    # weights of another architecture
    other = train(patches, tmp_path / "n3", ArchSpec(3, (2, 2, 2)), 1, TrainConfig(epochs=1, **FAST))
    (tmp_path / "run/model.pt").write_bytes((tmp_path / "n3/model.pt").read_bytes())
    with pytest.raises(UserError, match="do not fit architecture n2_p22"):
        load_model(tmp_path / "run")
    (tmp_path / "run/model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load the weights"):
        load_model(tmp_path / "run")
    # corrupt checkpoint
    (tmp_path / "n3/checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt or unreadable"):
        train(patches, tmp_path / "n3", ArchSpec(3, (2, 2, 2)), 1, TrainConfig(epochs=1, **FAST))
    # RF larger than the patch
    with pytest.raises(UserError, match="receptive field of 392 px, larger than the 96 px"):
        train(patches, tmp_path / "big", ArchSpec(2, (8, 8)), 1, TrainConfig(epochs=1, **FAST))
    # pixel size mismatch and empty test split
    other_px = make_patch_dir(tmp_path / "q", n=(6, 2, 2), size=96, pixel_size_nm=0.2)
    with pytest.raises(UserError, match="trained at 0.1 nm/px"):
        evaluate(tmp_path / "n3", other_px, tmp_path / "e", "toy")
    np.save(patches / "test_masks.npy", np.zeros((2, 96, 96), np.uint8))
    with pytest.raises(UserError, match="no particle pixels"):
        evaluate(tmp_path / "n3", patches, tmp_path / "e", "toy")
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").iterdir())
    assert other["rf_px"] == 96


def test_aggregate_mean_std():
    rows = pd.DataFrame([
        {"dataset": "d", "method": "unet", "arch": "n2_p22", "blocks": 2, "rf_px": 44, "hard_dice": v,
         "soft_dice": v, "global_dice": v, "iou": v, "precision": v, "recall": v, "seed": s}
        for s, v in [(1, 0.8), (2, 0.9)]])
    agg = aggregate(rows)
    assert agg["hard_dice_mean"].item() == pytest.approx(0.85)
    assert agg["hard_dice_std"].item() == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert agg["n_seeds"].item() == 2


def test_uncalibrated_data_leave_nm_columns_empty(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), pixel_size_nm=None)
    meta = train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=1, **FAST))
    assert meta["pixel_size_nm"] is None and meta["rf_nm"] is None and meta["rf_px"] == 44
    row = evaluate(tmp_path / "run", patches, tmp_path / "e", "toy")
    assert np.isnan(row["rf_nm"]) and np.isnan(row["pixel_size_nm"])
    parts = pd.read_csv(tmp_path / "e/particles.csv")
    assert parts["diameter_nm"].isna().all() and (parts["diameter_px"] > 0).all()
    calibrated = make_patch_dir(tmp_path / "q", n=(6, 2, 2), pixel_size_nm=0.1)
    with pytest.raises(UserError, match="trained at an unknown pixel size"):
        evaluate(tmp_path / "run", calibrated, tmp_path / "f", "toy")


def test_diverged_training_stops_with_a_clear_error_and_no_model(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), size=48)
    images = np.load(patches / "train_images.npy")
    images[0, 0, 0] = np.nan
    np.save(patches / "train_images.npy", images)
    with pytest.raises(UserError, match="training diverged in epoch 1 .*training.precision fp32"):
        train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=2, **FAST))
    assert not (tmp_path / "run/model.pt").exists() and not (tmp_path / "run/checkpoint.pt").exists()
