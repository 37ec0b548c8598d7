"""Whole training epochs on the user's path, against a plain reference loop, printed as JSON.

    python -m benchmarks.epoch                 # small set: ~70 simulated low-res patches of 256 px, n2_p44, 6 epochs
    python -m benchmarks.epoch --paper-sized   # also 216 patches of 512 px (the paper's set size), 3 epochs
    python -m benchmarks.epoch --quick         # seconds: checks that everything runs (CI)
    python -m benchmarks.epoch --precision fp32   # rfseg in float32 too: its gain without bfloat16, on any CPU

rfseg: the ``rfseg train`` command as the workflow runs it (a fresh process: start-up, loading, the epochs with
validation and an atomic checkpoint after each), timed from outside and per part from its own ``history.csv``
(steps, validation, checkpoint; the rest of an epoch is its set-up). Reference: the plain loop of the paper's
authors' style in the same process layout: eager float32, NCHW, the 8 dihedral forms materialised as numpy arrays,
one random form per patch each epoch, a per-batch dice computed on the host, validation after every epoch, the
state dict saved after every epoch. Both train the same network on the same patches for the same epochs; epoch 1
(warm-up) is left out of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks import machine
from benchmarks.throughput import dihedral_stack, paper_sized_patches
from rfseg.blocks.runtime import PRECISIONS


def _small_set(root: Path, n_images: int, size: int, patch: int) -> Path:
    """Simulated low-res micrographs through preprocess and patches, as a user starts (``rfseg simulate lowres``)."""
    from rfseg.stages.patches import make_patches
    from rfseg.stages.preprocess import preprocess
    from rfseg.stages.simulate import simulate

    simulate("lowres", root / "raw", n_images=n_images, seed=1, size=size)
    preprocess(root / "pre", manifest=root / "raw" / "manifest.csv")
    make_patches(root / "pre", root / "patches", patch_size_px=patch)
    return root / "patches"


def _rfseg_train(patches: Path, out: Path, arch, epochs, batch, threads, precision) -> dict:
    cmd = [sys.executable, "-m", "rfseg.cli", "train", "--patches", str(patches), "--arch", arch, "--seed", "1",
           "--epochs", str(epochs), "--batch-size", str(batch), "--augment", "random8", "--threads", str(threads),
           "--precision", precision, "--out", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    meta = json.loads((out / "model.json").read_text())
    history = pd.read_csv(out / "history.csv")
    h = history.iloc[1:]
    epoch_s = h["seconds"] + h["checkpoint_seconds"]
    n = meta["train_patches"]
    parts = {"steps_s": h["steps_seconds"].median(), "validation_s": h["validation_seconds"].median(),
             "checkpoint_s": h["checkpoint_seconds"].median(),
             "setup_s": h["setup_seconds"].median()}
    return {"epoch_s": float(epoch_s.median()), "patches_per_s": n / float(epoch_s.median()),
            "steps_only_patches_per_s": n / parts["steps_s"], "parts_s": {k: float(v) for k, v in parts.items()},
            "process_wall_s": wall,
            "outside_epochs_s": wall - float(history["seconds"].sum() + history["checkpoint_seconds"].sum()),
            "autocast": meta["autocast"], "train_patches": n, "val_patches": meta["val_patches"],
            "final_train_loss": meta["final"]["train_loss"]}


def _reference_train(patches: Path, out: Path, arch, epochs, batch, threads) -> dict:
    from rfseg.blocks import artifacts
    from rfseg.blocks.models import ArchSpec, build_model

    torch.set_num_threads(threads)
    x, y = artifacts.load_split(patches, "train")
    xv, yv = artifacts.load_split(patches, "val")
    aug_x, aug_y = dihedral_stack(np.asarray(x)), dihedral_stack(np.asarray(y))  # (8 * n, H, W)
    model = build_model(ArchSpec.from_name(arch), seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    n, times, loss, dice = len(x), [], float("nan"), []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        chosen = rng.permutation(n) + n * rng.integers(0, 8, n)  # one random dihedral form per patch
        for i in range(0, n, batch):
            b = chosen[i:i + batch]
            xb, yb = torch.from_numpy(aug_x[b][:, None]), torch.from_numpy(aug_y[b]).long()
            logits = model(xb)
            loss_t = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss_t.backward()
            opt.step()
            pred, truth = logits.argmax(1).numpy() == 1, yb.numpy() == 1
            dice.append(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))
            loss = float(loss_t)
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xv), batch):
                F.cross_entropy(model(torch.from_numpy(np.array(xv[i:i + batch])[:, None])),
                                torch.from_numpy(np.array(yv[i:i + batch])).long())
        torch.save(model.state_dict(), out)
        times.append(time.perf_counter() - t)
    epoch_s = float(np.median(times[1:]))
    return {"epoch_s": epoch_s, "patches_per_s": n / epoch_s, "final_train_loss": loss,
            "final_batch_dice": float(dice[-1])}


def _compare(name, patches, arch, epochs, batch, threads, precision, tmp) -> dict:
    row = {"set": name, "arch": arch, "epochs": epochs, "batch": batch,
           "rfseg": _rfseg_train(patches, tmp / f"{name}-rfseg", arch, epochs, batch, threads, precision),
           "reference": _reference_train(patches, tmp / f"{name}-reference.pt", arch, epochs, batch, threads)}
    row["speedup_whole_epoch"] = row["rfseg"]["patches_per_s"] / row["reference"]["patches_per_s"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny set and 2 epochs, only to check it works")
    p.add_argument("--paper-sized", action="store_true", help="also the paper-sized set (216 patches of 512 px)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--arch", default="n2_p44")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="rfseg's training precision (the reference is always float32)")
    args = p.parse_args(argv)
    result = {"machine": machine(args.threads), "quick": args.quick, "precision": args.precision, "sets": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            patches = _small_set(tmp / "small", n_images=6, size=256, patch=128)
            result["sets"].append(_compare("quick", patches, args.arch, 3, 4, args.threads, args.precision, tmp))
        else:
            patches = _small_set(tmp / "small", n_images=24, size=512, patch=256)
            result["sets"].append(_compare("small", patches, args.arch, 6, 16, args.threads, args.precision, tmp))
        if args.paper_sized:
            patches = paper_sized_patches(tmp / "paper")
            result["sets"].append(_compare("paper_sized", patches, args.arch, 3, 32, args.threads, args.precision,
                                           tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
