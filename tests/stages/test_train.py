import json
import os
import signal
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from rfseg.blocks import training as train_mod
from rfseg.blocks.bundle import load_bundle
from rfseg.blocks.models import ArchSpec, build_model
from rfseg.errors import UserError
from rfseg.stages.evaluate import evaluate
from rfseg.stages.train import TrainConfig, lr_factor, train
from support import THREADS, make_patch_dir, same_weights, start_paused, train_cmd

FAST = dict(batch_size=8, lr=3e-3, augment="random8", precision="fp32")


def test_tiny_dataset_trains_and_evaluates(tmp_path):
    patches = make_patch_dir(tmp_path / "p")
    meta = train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=25, **FAST), threads=THREADS)
    assert meta["params"] == 8074 and meta["rf_px"] == 44
    assert (tmp_path / "run/history.csv").exists()
    row = evaluate(tmp_path / "run", patches, tmp_path / "eval", "toy")
    assert row["hard_dice"] > 0.9 and row["global_dice"] > 0.9
    assert set(pd.read_csv(tmp_path / "eval/metrics.csv").columns) >= {
        "dataset", "method", "arch", "blocks", "pools", "dilations", "params", "rf_px", "rf_nm", "seed",
        "hard_dice", "soft_dice", "global_dice", "iou", "precision", "recall"}
    model, _ = load_bundle(tmp_path / "run")
    assert isinstance(torch.load(tmp_path / "run/model.pt", weights_only=True), dict)


def _seed_scores(patches, tmp_path, **head):
    cfg = TrainConfig(epochs=40, **FAST, **head)
    rows = []
    for seed in (1, 2, 3):
        name = f"{seed}{'-'.join(map(str, head.values()))}"
        train(patches, tmp_path / name, ArchSpec(2, (2, 2)), seed, cfg, threads=THREADS)
        rows.append(evaluate(tmp_path / name, patches, tmp_path / f"e{name}", "toy"))
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_every_seed_converges_and_is_confident(tmp_path):
    """Seed stability (README, the demo): three seeds end within 0.01 hard dice of each other and none is
    under-confident (soft dice at most 0.1 below hard). With the paper's zero head bias and one learning rate some
    seed fails this at the same budget."""
    patches = make_patch_dir(tmp_path / "p", n=(24, 4, 8), size=64, pixel_size_nm=0.25)
    scores = _seed_scores(patches, tmp_path)
    assert scores["hard_dice"].std() <= 0.01 and (scores["hard_dice"] > 0.9).all(), scores
    assert (scores["soft_dice"] >= scores["hard_dice"] - 0.1).all(), scores
    paper = _seed_scores(patches, tmp_path, head_bias="zero", head_bias_lr_scale=1.0, head_init="kaiming")
    assert (paper["hard_dice"].std() > 0.01) or (paper["soft_dice"] < paper["hard_dice"] - 0.1).any(), paper


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


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_and_resume_is_bit_identical(tmp_path, sig):
    patches = make_patch_dir(tmp_path / "p", n=(40, 4, 4), size=64)
    # the rates of the resumed epochs follow the schedule, and the weight average resumes where it was
    epochs, cosine = 6, ["--lr-schedule", "cosine", "--ema-halflife", "1"]
    subprocess.run(train_cmd(patches, tmp_path / "ref", epochs) + cosine, check=True, capture_output=True)
    proc = start_paused(train_cmd(patches, tmp_path / "cut", epochs) + cosine, tmp_path / "cut/checkpoint.pt", 2)
    assert torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)["epoch"] == 2
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "checkpoint of the last finished epoch is kept" in out
    assert not (tmp_path / "cut/model.pt").exists()
    assert not list((tmp_path / "cut").glob(".*part*"))
    done = subprocess.run(train_cmd(patches, tmp_path / "cut", epochs) + cosine, check=True, capture_output=True,
                          text=True)
    assert "resumed from" in done.stdout and "after epoch 2" in done.stdout
    assert same_weights(tmp_path / "ref/model.pt", tmp_path / "cut/model.pt")
    ref, cut = (pd.read_csv(tmp_path / d / "history.csv").filter(regex="^(?!.*seconds$)") for d in ("ref", "cut"))
    assert list(ref.columns) == ["epoch", "lr", "train_loss", "val_loss", "val_dice"]  # the timings differ
    assert ref.equals(cut)
    assert ref["lr"].iloc[0] == 0.003 and ref["lr"].is_monotonic_decreasing and ref["lr"].iloc[-1] < 0.0003


def test_cosine_schedule_sets_every_group_along_half_a_cosine(tmp_path):
    assert [lr_factor("constant", e, 4) for e in range(4)] == [1.0] * 4
    assert np.allclose([lr_factor("cosine", e, 4) for e in range(4)], [1, (1 + 2 ** -0.5) / 2, 0.5,
                                                                        (1 - 2 ** -0.5) / 2])
    patches = make_patch_dir(tmp_path / "p", n=(8, 2, 2), size=48)
    train(patches, tmp_path / "run", "n2_p22", 1, TrainConfig(epochs=4, lr_schedule="cosine", **FAST))
    history = pd.read_csv(tmp_path / "run/history.csv")
    assert np.allclose(history["lr"], [FAST["lr"] * lr_factor("cosine", e, 4) for e in range(4)])
    with pytest.raises(UserError, match="--lr-schedule"):
        TrainConfig(lr_schedule="step")


def test_weight_average_halves_an_update_after_its_half_life_and_is_what_training_keeps(tmp_path):
    from rfseg.blocks.training import WeightAverage

    zeros, ones = (build_model(ArchSpec.from_name("n2_p22"), seed=1) for _ in range(2))
    with torch.no_grad():
        for a, b in zip(zeros.parameters(), ones.parameters()):
            a.zero_(), b.fill_(1)
    average = WeightAverage(zeros, halflife_steps=4)
    for _ in range(4):
        average.update(ones)
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in average.model.parameters())
    assert all(torch.equal(p, torch.zeros_like(p)) for p in zeros.parameters())  # the average is a copy
    patches = make_patch_dir(tmp_path / "p", n=(8, 2, 2), size=48)
    meta = train(patches, tmp_path / "run", "n2_p22", 1, TrainConfig(epochs=3, ema_halflife_epochs=1, **FAST))
    plain = train(patches, tmp_path / "plain", "n2_p22", 1, TrainConfig(epochs=3, **FAST))
    assert meta["training"]["ema_halflife_epochs"] == 1
    assert not same_weights(tmp_path / "run/model.pt", tmp_path / "plain/model.pt")
    assert meta["final"]["train_loss"] == plain["final"]["train_loss"]  # the average does not change training
    with pytest.raises(UserError, match="--ema-halflife"):
        TrainConfig(ema_halflife_epochs=0)


def test_kill_during_the_checkpoint_write_keeps_the_last_one(tmp_path, monkeypatch):
    """A crash while the checkpoint of epoch 3 is being written leaves that of epoch 2 intact, and the rerun
    resumes from it to the same weights as an uninterrupted run."""
    from rfseg.blocks import io

    patches = make_patch_dir(tmp_path / "p", n=(16, 4, 4), size=48)
    cfg = TrainConfig(epochs=4, **FAST)
    train(patches, tmp_path / "ref", "n2_p22", 3, cfg)
    real_replace, writes = os.replace, []

    def crash_on_third(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            writes.append(dst)
            if len(writes) == 3:
                raise KeyboardInterrupt  # the process dies with the new checkpoint written but not renamed
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train(patches, tmp_path / "cut", "n2_p22", 3, cfg)
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)["epoch"] == 2
    train(patches, tmp_path / "cut", "n2_p22", 3, cfg)
    assert same_weights(tmp_path / "ref/model.pt", tmp_path / "cut/model.pt")


@pytest.mark.parametrize("options", [dict(select="best"), dict(early_stopping_patience=1, epochs=8)])
def test_resume_with_best_weights_and_early_stopping(tmp_path, options):
    """Resuming keeps the best weights seen so far and the early-stopping count: the result equals an
    uninterrupted run."""
    patches = make_patch_dir(tmp_path / "p", n=(16, 4, 4), size=48)
    cfg = TrainConfig(**{**dict(epochs=5, **FAST), **options})
    ref = train(patches, tmp_path / "ref", "n2_p22", 4, cfg)
    cmd = train_cmd(patches, tmp_path / "cut", cfg.epochs)
    cmd[cmd.index("--seed") + 1] = "4"
    cmd[cmd.index("--batch-size") + 1] = str(cfg.batch_size)
    cmd += ["--precision", "fp32"] + (["--select", "best"] if cfg.select == "best" else []) + (
        ["--early-stopping", "1"] if cfg.early_stopping_patience else [])
    proc = start_paused(cmd, tmp_path / "cut/checkpoint.pt", 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    cut = train(patches, tmp_path / "cut", "n2_p22", 4, cfg)
    assert (cut["epochs_run"], cut["best_epoch"], cut["weights"]) == (ref["epochs_run"], ref["best_epoch"],
                                                                    ref["weights"])
    assert same_weights(tmp_path / "ref/model.pt", tmp_path / "cut/model.pt")


def test_bad_model_inputs(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(6, 2, 2), size=96)
    train(patches, tmp_path / "run", ArchSpec(2, (2, 2)), 1, TrainConfig(epochs=1, **FAST))
    # a model.json beside the weights of a model with identical shapes (pools do not change the parameters)
    train(patches, tmp_path / "p24", ArchSpec(2, (2, 4)), 2, TrainConfig(epochs=1, **FAST))
    (tmp_path / "run/model.pt").write_bytes((tmp_path / "p24/model.pt").read_bytes())
    with pytest.raises(UserError, match="not the ones .*model.json describes"):
        load_bundle(tmp_path / "run")
    # weights of another architecture, with no hash recorded: the shapes are checked
    other = train(patches, tmp_path / "n3", ArchSpec(3, (2, 2, 2)), 1, TrainConfig(epochs=1, **FAST))
    meta = json.loads((tmp_path / "run/model.json").read_text())
    del meta["weights_sha256"]
    (tmp_path / "run/model.json").write_text(json.dumps(meta))
    (tmp_path / "run/model.pt").write_bytes((tmp_path / "n3/model.pt").read_bytes())
    with pytest.raises(UserError, match="do not fit architecture n2_p22"):
        load_bundle(tmp_path / "run")
    (tmp_path / "run/model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load the weights"):
        load_bundle(tmp_path / "run")
    (tmp_path / "run/model.json").write_text('{"arch": {"blocks": 2, ')
    with pytest.raises(UserError, match="model.json: the model description is not valid JSON"):
        load_bundle(tmp_path / "run")
    # corrupt checkpoint
    (tmp_path / "n3/checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a training checkpoint rfseg can read"):
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
