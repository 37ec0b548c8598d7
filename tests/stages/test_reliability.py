"""Reliability: rfseg never deletes what it did not write, never resumes a stale checkpoint, respects the umask."""

import os
import stat

import numpy as np
import pytest
import torch

from support import make_patch_dir
from rfseg.blocks import io
from rfseg.blocks.models import ArchSpec
from rfseg.stages.train import TrainConfig, train

FAST = dict(batch_size=8, lr=3e-3, augment="random8", precision="fp32")


def _inputs(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(100, 10, (64, 64)).astype(np.float32)
        mask = np.zeros((64, 64), np.uint8)
        mask[8:30, 8:30] = 1
        io.write_tiff(root / f"im{i}.tif", img, 0.1)
        io.write_tiff(root / f"im{i}_mask.tif", mask, 0.1)
    return root


@pytest.mark.parametrize("where", ["user_folder", "working_folder", "images_folder"])
def test_preprocess_never_deletes_what_rfseg_did_not_write(cli, tmp_path, where):
    inputs = _inputs(tmp_path / "in")
    keep = tmp_path / "d"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep")
    out = {"user_folder": keep, "working_folder": ".", "images_folder": inputs}[where]
    before = sorted(p.name for p in (inputs.iterdir()))
    proc = cli("preprocess", "--images", f"{inputs}/im?.tif", "--masks", f"{inputs}/{{stem}}_mask.tif",
               "--out", out, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (keep / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in inputs.iterdir()) == before
    assert (tmp_path / "in").is_dir() and (tmp_path / "d").is_dir()


def test_preprocess_replaces_its_own_output_atomically(cli, tmp_path):
    inputs = _inputs(tmp_path / "in")
    args = ["preprocess", "--images", f"{inputs}/im?.tif", "--masks", f"{inputs}/{{stem}}_mask.tif", "--out",
            tmp_path / "pre"]
    cli(*args, check_rc=0)
    assert (tmp_path / "pre" / io.OUTPUT_MARKER).is_file()
    (tmp_path / "pre/stale.tif").write_text("from an older run")
    cli(*args, check_rc=0)
    assert not (tmp_path / "pre/stale.tif").exists() and (tmp_path / "pre/im0.tif").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_csv(__import__("pandas").DataFrame({"a": [1]}), tmp_path / "t.csv")
        with io.atomic_dir(tmp_path / "d") as d:
            io.write_json({}, d / "x.json")
    finally:
        os.umask(old)
    for p in (tmp_path / "t.csv", tmp_path / "d/x.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def test_checkpoint_of_other_patch_data_is_not_resumed(tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(8, 2, 2), size=48)
    spec = ArchSpec(2, (2, 2))
    train(patches, tmp_path / "run", spec, 1, TrainConfig(epochs=2, **FAST))
    first = _weights(tmp_path / "run")
    images = np.load(patches / "train_images.npy")
    np.save(patches / "train_images.npy", -images)  # same summary.json, other pixels
    train(patches, tmp_path / "run", spec, 1, TrainConfig(epochs=2, **FAST))
    fresh = train(patches, tmp_path / "fresh", spec, 1, TrainConfig(epochs=2, **FAST))
    again = _weights(tmp_path / "run")
    assert fresh["epochs_run"] == 2
    assert any(not torch.equal(first[k], again[k]) for k in first)
    assert all(torch.equal(again[k], _weights(tmp_path / "fresh")[k]) for k in again)


def test_checkpoint_of_other_training_code_is_not_resumed(tmp_path, monkeypatch, capsys):
    from rfseg import provenance

    patches = make_patch_dir(tmp_path / "p", n=(8, 2, 2), size=48)
    spec = ArchSpec(2, (2, 2))
    train(patches, tmp_path / "run", spec, 1, TrainConfig(epochs=2, **FAST))
    capsys.readouterr()
    train(patches, tmp_path / "run", spec, 1, TrainConfig(epochs=3, **FAST))
    out = capsys.readouterr().out  # other epochs: another configuration, started over
    assert "from another configuration: starting over" in out and "resumed" not in out
    real = provenance.fingerprint
    monkeypatch.setattr(provenance, "fingerprint", lambda *m: "edited" + real(*m))
    train(patches, tmp_path / "run", spec, 1, TrainConfig(epochs=3, **FAST))
    out = capsys.readouterr().out
    assert "from another configuration: starting over" in out and "resumed" not in out
