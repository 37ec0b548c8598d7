"""Stage: train one architecture on one patch folder with one seed (``rfseg train``).

The data order and the augmentation of epoch e come from (seed, e) alone, so every architecture sees the same batches
for a seed, and a run resumed from its checkpoint continues exactly as an uninterrupted run (bit-identical weights on
CPU and, with deterministic cuDNN, on a GPU). The checkpoint is written atomically after every epoch and resumes only
a run of the same architecture, settings, seed, patch arrays and training code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rfseg.blocks import artifacts, bundle, io
from rfseg.blocks.augment import epoch_plan
from rfseg.blocks.models import ArchSpec, build_model, count_params, receptive_field, set_head_prior
from rfseg.blocks.runtime import autocast_dtype, autocast_factory, configure_cuda, pick_device, set_threads
from rfseg.blocks.training import WeightAverage, train_step, validate
from rfseg.errors import UserError, check_choice

#: after the checkpoint of this epoch the process waits for a signal (tests interrupt training at a known point)
PAUSE_ENV = "RFSEG_PAUSE_AFTER_EPOCH"
HEAD_BIASES = ("prior", "zero")
LR_SCHEDULES = ("constant", "cosine")
SELECTS = ("last", "best")  # which epoch's weights become model.pt
HEAD_INITS = {"kaiming": None, "small": 0.01}  # std of the output layer's initial weights (None: Kaiming, the paper)


@dataclass
class TrainConfig:
    """Training settings. The defaults are the paper's (cross-entropy, Adam, Kaiming init) except the output layer's:
    ``head_bias="zero"``, ``head_bias_lr_scale=1`` and ``head_init="kaiming"`` give the paper's exactly (see the
    docs/explanation/demo.md)."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    augment: str = "all8"  # "all8": every patch in all 8 dihedral forms per epoch (paper); "random8": one, random
    precision: str = "auto"  # "auto" (bf16 where supported), "bf16", "fp32"
    channels_last: bool = True
    device: str = "auto"  # "auto", "cpu", "cuda"
    early_stopping_patience: int | None = None  # epochs without val-dice gain; None = off (the paper)
    select: str = "last"  # which weights become model.pt: "last" (the paper) or "best" (by val dice)
    head_bias: str = "prior"  # "prior": log of the training masks' class fractions; "zero": the paper
    head_bias_lr_scale: float = 30.0  # Adam learning rate of the head's bias relative to lr (1: the paper)
    head_init: str = "small"  # output-layer weights: "small": N(0, 0.01²); "kaiming": the paper
    lr_schedule: str = "constant"  # "constant" (the paper) or "cosine": decays to 0 over the epochs
    ema_halflife_epochs: float | None = None  # validate and keep an exponential moving average of the weights

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError(f"epochs and batch size (--epochs, --batch-size) must be at least 1, got {self.epochs} "
                            f"and {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"the learning rate (--lr) must be positive, got {self.lr}")
        for what, value, choices in (("select (--select)", self.select, SELECTS),
                                     ("head bias (--head-bias)", self.head_bias, HEAD_BIASES),
                                     ("head init (--head-init)", self.head_init, HEAD_INITS),
                                     ("learning-rate schedule (--lr-schedule)", self.lr_schedule, LR_SCHEDULES)):
            check_choice(what, value, choices)
        if not self.head_bias_lr_scale > 0:
            raise UserError(f"the head-bias learning-rate scale (--head-bias-lr-scale) must be positive, got "
                            f"{self.head_bias_lr_scale}")
        if self.ema_halflife_epochs is not None and not self.ema_halflife_epochs > 0:
            raise UserError(f"the weight-average half-life (--ema-halflife) must be a positive number of epochs, "
                            f"got {self.ema_halflife_epochs}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise UserError("early-stopping patience (--early-stopping) must be at least 1 epoch")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of (0-based) ``epoch`` relative to the configured one: 1 throughout for ``constant``; for
    ``cosine``, half a cosine from 1 at the first epoch towards 0 after the last (PyTorch's CosineAnnealingLR with
    T_max = epochs, stepped per epoch). A function of the epoch alone, so a resumed run sets the same rates."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return 1.0


def run_identity(spec: ArchSpec, cfg: TrainConfig, seed: int, patch_summary: dict, arrays) -> str:
    """Identity of a training run: architecture, settings, seed, patch summary, the patch arrays themselves and the
    training code (import closure of this module)."""
    from rfseg.provenance import fingerprint

    h = hashlib.sha256(json.dumps([spec.to_dict(), asdict(cfg), seed, patch_summary, fingerprint(__name__)],
                                  sort_keys=True).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


class _Preempted(Exception):
    pass


def _raise_preempted(signum, frame):
    raise _Preempted(signal.Signals(signum).name)


def _pause_if_asked(epoch: int, checkpoint: Path) -> None:
    if os.environ.get(PAUSE_ENV) == str(epoch):
        checkpoint.with_name(checkpoint.name + ".paused").write_text(str(epoch))
        while True:
            signal.pause()


def _load_patches(patch_dir, split):
    images, masks = (np.array(a) for a in artifacts.load_split(patch_dir, split))
    return images, masks


def train(patch_dir, out_dir, arch, seed: int, cfg: TrainConfig | None = None, *, checkpoint=None,
          threads: int = 1, dataset: str = "") -> dict:
    """Train one model; write the bundle (``model.pt``, ``model.json``, ``history.csv``) into ``out_dir``.

    Parameters
    ----------
    patch_dir : a folder written by ``rfseg patches``
    arch : ArchSpec or canonical name (e.g. ``n2_p44``)
    cfg : TrainConfig (defaults: the paper's)
    checkpoint : path of the per-epoch checkpoint; default ``<out_dir>/checkpoint.pt``
    threads : CPU threads

    Returns
    -------
    The bundle's metadata (``model.json``).

    Raises
    ------
    UserError
        Before any work, if ``out_dir`` would replace files rfseg did not write or overlaps ``patch_dir``, if the
        checkpoint is not one rfseg wrote, or if another run is writing ``out_dir``.
    """
    out = bundle.check_bundle_dir(out_dir, reads=[patch_dir])
    ckpt_path = Path(checkpoint) if checkpoint else out / "checkpoint.pt"
    bundle.check_bundle_dir(ckpt_path.parent, reads=[patch_dir])
    created = not out.exists()
    try:
        with io.output_lock(out):
            ckpt = bundle.read_checkpoint(ckpt_path)  # refuses a file rfseg did not write, before any work
            return _train(patch_dir, out, arch, seed, cfg or TrainConfig(), ckpt_path, ckpt, threads, dataset)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # a failure leaves no empty folder behind
            out.rmdir()
        raise


def _train(patch_dir, out: Path, arch, seed: int, cfg: TrainConfig, ckpt_path: Path, ckpt: dict | None,
           threads: int, dataset: str) -> dict:
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.from_name(arch)
    set_threads(threads)
    device = pick_device(cfg.device)
    epoch_plan(seed, 0, 1, cfg.augment)  # an unknown augmentation fails before any work
    summary = artifacts.read_patch_summary(patch_dir)
    size = summary["patch_size_px"]
    rf = receptive_field(build_model(spec))
    if rf > size:
        raise UserError(f"architecture {spec.name} has a receptive field of {rf} px, larger than the "
                        f"{size} px patches: choose smaller pools or larger patches")
    if size % spec.downsampling:
        raise UserError(f"patch size {size} px is not a multiple of {spec.downsampling} (product of the pools of "
                        f"{spec.name}): change the patch size (rfseg patches --size; config: patches.size)")
    arrays = (*_load_patches(patch_dir, "train"), *_load_patches(patch_dir, "val"))
    if len(arrays[0]) == 0 or len(arrays[2]) == 0:
        raise UserError(f"{patch_dir}: the train or val split has no patches: add micrographs or lower "
                        f"the particle threshold (rfseg patches --min-particle-px; config: patches.min_particle_px)")
    if device.type == "cuda":
        configure_cuda(deterministic=True)
    memfmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_train, y_train, x_val, y_val = map(torch.from_numpy, arrays)
    x_train = x_train[:, None].to(device).contiguous(memory_format=memfmt)
    y_train = y_train.long().to(device)
    x_val = x_val[:, None].to(device).contiguous(memory_format=memfmt)
    y_val = y_val.long().to(device)

    model = build_model(spec, seed=seed, head_std=HEAD_INITS[cfg.head_init])
    if cfg.head_bias == "prior":
        particle_share = float(np.count_nonzero(arrays[1])) / arrays[1].size
        set_head_prior(model, [1 - particle_share, particle_share])
    model = model.to(device, memory_format=memfmt)
    rest = [p for name, p in model.named_parameters() if name != "head.bias"]
    opt = torch.optim.Adam([{"params": rest}, {"params": [model.head.bias], "lr": cfg.lr * cfg.head_bias_lr_scale}],
                           lr=cfg.lr)
    base_lrs = [group["lr"] for group in opt.param_groups]
    steps_per_epoch = math.ceil(len(epoch_plan(seed, 0, len(x_train), cfg.augment)[0]) / cfg.batch_size)
    average = (None if cfg.ema_halflife_epochs is None else
               WeightAverage(model, halflife_steps=cfg.ema_halflife_epochs * steps_per_epoch))
    judged = average.model if average else model  # the weights validated, selected and saved
    dtype = autocast_dtype(cfg.precision, device)
    amp = autocast_factory(device, dtype)
    identity = run_identity(spec, cfg, seed, summary, arrays)
    history, start, best, best_state = [], 0, (-1.0, -1), None
    if ckpt is not None and ckpt.get("config_hash") != identity:
        print(f"checkpoint {ckpt_path} is from another configuration: starting over", flush=True)
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if average:
            average.model.load_state_dict(ckpt["average"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        history, start, best, best_state = ckpt["history"], ckpt["epoch"], tuple(ckpt["best"]), ckpt["best_state"]
        print(f"resumed from {ckpt_path} after epoch {start}", flush=True)

    old_handler = signal.signal(signal.SIGTERM, _raise_preempted)
    try:
        for epoch in range(start, cfg.epochs):
            patience = cfg.early_stopping_patience
            if patience and history and epoch - best[1] >= patience:  # checked here, so a resumed run stops too
                print(f"early stopping: no val-dice gain for {patience} epochs", flush=True)
                break
            t0 = time.perf_counter()
            factor = lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
            for group, base_lr in zip(opt.param_groups, base_lrs):
                group["lr"] = base_lr * factor
            model.train()
            idx, ks = epoch_plan(seed, epoch, len(x_train), cfg.augment)
            idx = idx.to(device)  # the transform ids stay on the host: choosing per-transform groups needs no sync
            t_plan = time.perf_counter()
            loss_sum = 0.0
            for i in range(0, len(idx), cfg.batch_size):
                b, k = idx[i:i + cfg.batch_size], ks[i:i + cfg.batch_size]
                loss_sum += train_step(model, opt, amp, memfmt, x_train, y_train, b, k) * len(b)
                if average:
                    average.update(model)
            train_loss = float(loss_sum) / len(idx)  # waits for the last step
            t_steps = time.perf_counter()
            if not math.isfinite(train_loss):
                raise UserError(f"{out}: training diverged in epoch {epoch + 1} (the loss is not finite); the last "
                                f"checkpoint, if any, is kept: try training.precision fp32 (--precision fp32) or a "
                                f"lower training.lr (--lr)")
            val_loss, val_dice = validate(judged, x_val, y_val, cfg.batch_size, amp)
            t_val = time.perf_counter()
            history.append({"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
                            "val_loss": val_loss, "val_dice": val_dice, "seconds": t_val - t0,
                            "setup_seconds": t_plan - t0, "steps_seconds": t_steps - t_plan,
                            "validation_seconds": t_val - t_steps})
            print(f"epoch {epoch + 1}/{cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} val_dice "
                  f"{val_dice:.4f} ({history[-1]['seconds']:.1f} s)", flush=True)
            if val_dice > best[0]:
                best = (val_dice, epoch + 1)
                best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
            bundle.write_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                **({"average": average.model.state_dict()} if average else {}),
                "history": history, "best": list(best), "best_state": best_state,
                "torch_rng": torch.get_rng_state(), "config_hash": identity})
            # known only after the write, so the checkpoint's own copy of this row lacks it
            history[-1]["checkpoint_seconds"] = time.perf_counter() - t_val
            _pause_if_asked(epoch + 1, ckpt_path)
    except _Preempted as e:
        print(f"stopped by {e}; the checkpoint of the last finished epoch is kept for resuming", flush=True)
        raise SystemExit(143) from None
    finally:
        signal.signal(signal.SIGTERM, old_handler)

    state = best_state if cfg.select == "best" else judged.state_dict()
    px = summary["pixel_size_nm"]
    meta = {
        "arch": spec.to_dict(), "name": spec.name, "params": count_params(model), "rf_px": rf,
        "rf_nm": None if px is None else rf * px, "pixel_size_nm": px, "patch_size_px": size, "seed": seed,
        "training": asdict(cfg),
        "normalisation": "per-micrograph standardisation (mean 0, std 1) after the dataset's preprocessing",
        "preprocess": summary.get("preprocess"),
        "training_particles": (summary.get("particle_sizes") or {}).get("train"),
        "weights": cfg.select, "best_epoch": best[1], "best_val_dice": best[0], "epochs_run": len(history),
        "final": history[-1] if history else None, "train_patches": len(x_train), "val_patches": len(x_val),
        "device": str(device), "autocast": str(dtype).replace("torch.", "") if dtype else "fp32",
        "versions": {"torch": torch.__version__, "rfseg": __import__("rfseg").__version__},
        "dataset": dataset, "source": "trained",
    }
    return bundle.write_bundle(out, state, meta, pd.DataFrame(history), reads=[patch_dir])
