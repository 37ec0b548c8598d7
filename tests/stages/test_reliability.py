"""Reliability: rfseg never deletes or overwrites what it did not write, never resumes a stale or foreign checkpoint,
respects the umask, fails on a full or read-only disk with one line and nothing left behind, and locks its outputs."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rfseg.blocks import io
from rfseg.blocks.models import ArchSpec
from rfseg.errors import UserError
from rfseg.stages.train import TrainConfig, train
from support import make_patch_dir, one_line_error

FAST = dict(batch_size=8, lr=3e-3, augment="random8", precision="fp32")


def _inputs(root, n=3, size=64):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(100, 10, (size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        mask[8:30, 8:30] = 1
        io.write_tiff(root / f"im{i}.tif", img, 0.1)
        io.write_tiff(root / f"im{i}_mask.tif", mask, 0.1)
    return root


def _preprocess_args(inputs, out):
    return ["preprocess", "--images", f"{inputs}/im?.tif", "--masks", f"{inputs}/{{stem}}_mask.tif", "--out", out]


def _hidden(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("where", ["user_folder", "working_folder", "images_folder"])
def test_preprocess_never_deletes_what_rfseg_did_not_write(cli, tmp_path, where):
    inputs = _inputs(tmp_path / "in")
    keep = tmp_path / "d"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep")
    out = {"user_folder": keep, "working_folder": ".", "images_folder": inputs}[where]
    before = sorted(p.name for p in (inputs.iterdir()))
    one_line_error(cli(*_preprocess_args(inputs, out), cwd=tmp_path), "output folder")
    assert (keep / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in inputs.iterdir()) == before
    assert not _hidden(tmp_path)  # no temporary or lock file left beside the output


# ------------------------------------------------------------------------------ a user's file in an rfseg folder
def _make_toy_image(path, size=64):
    io.write_tiff(path, np.random.default_rng(0).normal(size=(size, size)).astype(np.float32), 0.25)
    return path


@pytest.fixture
def rerunnable(tmp_path, toy_models):
    """Each folder-writing command with the arguments that write its output ``OUT`` (made once, then rerun)."""
    inputs = _inputs(tmp_path / "in")
    pre = tmp_path / "pre"
    return {
        "simulate": ["simulate", "lowres", "--n-images", 1, "--seed", 1, "--size", 64, "--pixel-size", 0.5],
        "preprocess": _preprocess_args(inputs, "OUT")[:-2],
        "patches": ["patches", "--preprocessed", pre, "--size", 32, "--min-particle-px", 0],
        "predict": ["predict", toy_models[0], _make_toy_image(tmp_path / "a.tif")],
        "_pre": (_preprocess_args(inputs, pre)),
    }


@pytest.mark.parametrize("command", ["simulate", "preprocess", "patches", "predict"])
def test_a_rerun_keeps_a_users_file_and_replaces_only_its_own(cli, tmp_path, rerunnable, command):
    cli(*rerunnable["_pre"], check_rc=0)
    out = tmp_path / "out"
    args = [*rerunnable[command], "--out", out]
    cli(*args, check_rc=0)
    assert io.foreign_files(out) == []
    (out / ".snakemake_timestamp").touch()  # as Snakemake stamps a directory output: no user's file
    cli(*args, check_rc=0)  # a rerun replaces what rfseg wrote
    ours = sorted(p.name for p in out.iterdir())
    (out / "notes.txt").write_text("precious")
    one_line_error(cli(*args), "notes.txt")
    assert (out / "notes.txt").read_text() == "precious" and sorted(p.name for p in out.iterdir()) == sorted(
        [*ours, "notes.txt"])
    assert not [p for p in _hidden(tmp_path) if p.startswith(".out.")]


def test_train_and_import_never_replace_a_users_model_files(cli, tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 2), size=48)
    for name in ("model.pt", "model.json", "history.csv"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text("precious")
        one_line_error(cli("train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1,
                           "--out", out), f"holds {name}, which rfseg did not write")
        assert (out / name).read_text() == "precious" and sorted(p.name for p in out.iterdir()) == [name]
    # its own bundle it replaces
    args = ["train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--batch-size", 4,
            "--precision", "fp32", "--out", tmp_path / "m"]
    cli(*args, check_rc=0)
    cli(*args[:-1], tmp_path / "m", "--epochs", 2, check_rc=0)
    assert sorted(io.written_by_rfseg(tmp_path / "m")) == ["history.csv", "model.json", "model.pt"]


def test_train_refuses_a_checkpoint_it_did_not_write(cli, tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 2), size=48)
    out = tmp_path / "m"
    out.mkdir()
    torch.save({"weights": torch.zeros(3)}, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    one_line_error(cli("train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--out", out),
                   "checkpoint.pt: not a training checkpoint rfseg wrote")
    (out / "notes.pt").write_text("not a checkpoint at all")
    one_line_error(cli("train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--out",
                       tmp_path / "m2", "--checkpoint", out / "notes.pt"), "notes.pt: not a training checkpoint")
    assert (out / "checkpoint.pt").read_bytes() == before and not (out / "model.pt").exists()


def test_train_and_import_refuse_to_write_into_their_input(cli, tmp_path):
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 2), size=48)
    before = sorted(p.name for p in patches.iterdir())
    one_line_error(cli("train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--out",
                       patches), "overlap")
    assert sorted(p.name for p in patches.iterdir()) == before
    lab = tmp_path / "lab"
    lab.mkdir()
    torch.save({"w": torch.zeros(2)}, lab / "net.pt")
    one_line_error(cli("import", lab / "net.pt", "--pixel-size", 0.02, "--out", lab), "overlap")
    assert sorted(p.name for p in lab.iterdir()) == ["net.pt"]


@pytest.mark.parametrize("command", ["train", "import"])
def test_an_existing_file_as_the_output_folder_is_one_line(cli, tmp_path, command):
    (tmp_path / "taken").write_text("a file")
    patches = make_patch_dir(tmp_path / "p", n=(4, 2, 2), size=48)
    args = {"train": ["train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1],
            "import": ["import", tmp_path / "taken", "--pixel-size", 0.02]}[command]
    one_line_error(cli(*args, "--out", tmp_path / "taken"), "is an existing file")
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize("command", ["simulate", "preprocess", "patches", "predict"])
def test_the_working_folder_as_output_is_one_line(cli, tmp_path, rerunnable, command):
    cli(*rerunnable["_pre"], check_rc=0)
    work = tmp_path / "empty"
    work.mkdir()
    one_line_error(cli(*rerunnable[command], "--out", ".", cwd=work), "the working folder")
    assert list(work.iterdir()) == [] and not [p for p in _hidden(tmp_path) if p.startswith("..")]


# -------------------------------------------------------------------------------------- full and read-only disks
def _on_tmpfs(tmp_path, args, size_kb=64, read_only=False):
    """Run ``rfseg ARGS --out DISK/out`` with DISK a private tmpfs of ``size_kb`` (read-only if asked); returns
    (CompletedProcess of the command, the names left on DISK afterwards)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount (util-linux) to make a small or read-only disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    exe = Path(sys.executable).with_name("rfseg")
    quoted = " ".join(f"'{a}'" for a in [exe, *args, "--out", disk / "out"])
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    script = (f"mount -t tmpfs -o {opts} tmpfs '{disk}' || exit 99\n{quoted} 2>err.txt; echo $? > rc.txt\n"
              f"ls -A '{disk}' > left.txt")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    if proc.returncode == 99 or not (tmp_path / "rc.txt").exists():
        pytest.skip(f"cannot mount a tmpfs here (needs root in a private mount namespace): {proc.stderr[-200:]}")
    result = subprocess.CompletedProcess(args, int((tmp_path / "rc.txt").read_text()), "",
                                         (tmp_path / "err.txt").read_text())
    return result, (tmp_path / "left.txt").read_text().split()


def _six_commands(tmp_path, toy_models):
    """Each command that writes, with inputs large enough to fill a 64 KB disk."""
    inputs = _inputs(tmp_path / "in", size=256)
    io.write_tiff(tmp_path / "big.tif", np.random.default_rng(1).normal(size=(512, 512)).astype(np.float32), 0.25)
    from rfseg.stages.preprocess import preprocess

    preprocess(tmp_path / "pre", images=f"{inputs}/im?.tif", masks=f"{inputs}/{{stem}}_mask.tif")
    net = tmp_path / "net.pt"
    _write_receptive_field_network(net)
    patches = make_patch_dir(tmp_path / "p", n=(16, 2, 2), size=64)
    return {
        "simulate": ["simulate", "lowres", "--n-images", 3, "--seed", 1, "--size", 256, "--pixel-size", 0.5],
        "preprocess": ["preprocess", "--images", f"{inputs}/im?.tif", "--masks", f"{inputs}/{{stem}}_mask.tif"],
        "patches": ["patches", "--preprocessed", tmp_path / "pre", "--size", 64, "--min-particle-px", 0],
        "train": ["train", "--patches", patches, "--arch", "n2_p22", "--seed", 1, "--epochs", 1, "--batch-size", 8,
                  "--precision", "fp32"],
        "import": ["import", net, "--pixel-size", 0.02],
        "predict": ["predict", toy_models[0], tmp_path / "big.tif"],
    }


def _write_receptive_field_network(path):
    """A network of the receptive-field paper's N = 2 layout, pickled whole as the lab did."""
    from support import ReceptiveFieldUNet, save_as_main

    save_as_main(ReceptiveFieldUNet((2, 2)), path)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "preprocess", "patches", "train", "import", "predict"])
@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(tmp_path, toy_models, command, disk):
    args = _six_commands(tmp_path, toy_models)[command]
    proc, left = _on_tmpfs(tmp_path, args, size_kb=16 if command == "import" else 64, read_only=disk == "read-only")
    needle = "the disk is full" if disk == "full" else "the disk is read-only"
    one_line_error(proc, needle)
    assert left == [], left
    if disk == "full":
        assert "MB free" in proc.stderr


# -------------------------------------------------------------------------------------------------- checkpoints
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


# ------------------------------------------------------------------------------------------- locks and leftovers
def test_a_second_run_into_the_same_output_is_refused(cli, tmp_path, toy_models):
    image = _make_toy_image(tmp_path / "a.tif")
    with io.output_lock(tmp_path / "seg"):
        one_line_error(cli("predict", toy_models[0], image, "--out", tmp_path / "seg"),
                       "another rfseg command is writing this output now")
    assert not (tmp_path / "seg").exists()
    cli("predict", toy_models[0], image, "--out", tmp_path / "seg", check_rc=0)
    assert not _hidden(tmp_path)


def _hammer(args):
    folder, worker, n = args
    from rfseg.blocks import io as io_
    from rfseg.errors import UserError

    done = busy = 0
    for i in range(n):
        try:
            with io_.atomic_dir(folder) as tmp:
                (tmp / "who.txt").write_text(f"{worker} {i}")
            done += 1
        except UserError as e:
            assert "another rfseg command is writing" in str(e), str(e)
            busy += 1
    return done, busy


def test_concurrent_writers_of_one_folder_never_corrupt_it(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_hammer, [(tmp_path / "seg", w, 40) for w in range(4)])
    assert sum(d for d, _ in results) >= 1
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [io.OUTPUT_MARKER, "who.txt"]
    assert not _hidden(tmp_path)  # no .part, .old or lock left


def test_temporaries_of_a_killed_run_are_removed_by_the_next(cli, tmp_path, toy_models):
    stale = tmp_path / ".seg.abcd1234.part"
    stale.mkdir()
    io.write_marker(stale, [])
    (stale / "half.tif").write_bytes(b"partial")
    old = tmp_path / ".seg.efgh5678.old"
    (old / "seg").mkdir(parents=True)
    io.write_marker(old / "seg", [])
    someone_elses = tmp_path / ".seg.ijkl9012.part"  # the same name pattern, but no rfseg marker: not ours
    someone_elses.mkdir()
    cli("predict", toy_models[0], _make_toy_image(tmp_path / "a.tif"), "--out", tmp_path / "seg", check_rc=0)
    assert not stale.exists() and not old.exists() and someone_elses.is_dir()


def test_a_folder_another_run_is_replacing_is_reported_as_busy_not_as_holding_a_users_file(tmp_path):
    """Between a writer's two renames the folder is briefly absent, so an unlocked look may see files without their
    marker: while another run holds the output's lock that is reported as the other run, not as a user's file."""
    out = tmp_path / "seg"
    out.mkdir()
    (out / "who.txt").write_text("x")  # no marker lists it, as a look in the middle of a swap can see
    with io.output_lock(out):
        with pytest.raises(UserError, match="another rfseg command is writing this output now"):
            io.check_output_dir(out)
    with pytest.raises(UserError, match="holds files that rfseg did not write"):
        io.check_output_dir(out)
