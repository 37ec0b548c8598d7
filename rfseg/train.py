"""One training run: one architecture, one dataset, one seed.

The data order and the augmentation of epoch e come from a generator seeded by (seed, e) alone, so every architecture
sees the same batches for a seed, and a run resumed from the checkpoint of epoch e continues exactly as an
uninterrupted run (bit-identical weights on CPU). A checkpoint is written atomically after every epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rfseg import data, io
from rfseg.errors import UserError
from rfseg.models import ArchSpec, build_model, count_params, receptive_field
from rfseg.patches import dihedral_batch


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    augment: str = "all8"  # "all8": every patch in all 8 dihedral forms per epoch (paper); "random8": one, random
    precision: str = "auto"  # "auto" (bf16 where supported), "bf16", "fp32"
    channels_last: bool = True
    device: str = "auto"  # "auto", "cpu", "cuda"
    early_stopping_patience: int | None = None  # epochs without val-dice gain; None = off (the paper)
    select: str = "last"  # which weights become model.pt: "last" (the paper) or "best" (by val dice)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no GPU is visible: use device auto or cpu")
    return torch.device(name)


def configure_cuda(deterministic: bool = True) -> None:
    """cuDNN settings of a training run. Deterministic (the default) makes a seed give bit-identical weights on a
    GPU too; ``deterministic=False`` lets cuDNN benchmark and pick the fastest algorithms, which may differ per run."""
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "bf16" and not supported:
        raise UserError("precision bf16 was asked for but this CPU has no bfloat16 support: use auto or fp32")
    return torch.bfloat16 if supported else None


def autocast_factory(device: torch.device, dtype: torch.dtype | None):
    """A zero-argument callable giving the autocast context of a run (a no-op for float32)."""
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def epoch_plan(seed: int, epoch: int, n: int, augment: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch indices, dihedral transform ids) of one epoch, from (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if augment == "all8":
        order = torch.randperm(8 * n, generator=g)
        return order % n, order // n
    if augment == "random8":
        return torch.randperm(n, generator=g), torch.randint(0, 8, (n,), generator=g)
    raise UserError(f"training.augment must be 'all8' or 'random8', got {augment!r}")


def _hard_dice(logits: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    pred = logits.argmax(1) == 1
    t = masks.bool()
    return float(2 * (pred & t).sum()), float(pred.sum() + t.sum())


def validate(model, images: torch.Tensor, masks: torch.Tensor, batch_size: int, amp) -> tuple[float, float]:
    """Mean cross-entropy and pooled hard dice on non-augmented patches."""
    model.eval()
    loss_sum, inter, total = 0.0, 0.0, 0.0
    with torch.no_grad(), amp():
        for i in range(0, len(images), batch_size):
            x, y = images[i:i + batch_size], masks[i:i + batch_size]
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum")) / y[0].numel()
            a, b = _hard_dice(logits, y)
            inter, total = inter + a, total + b
    return loss_sum / max(len(images), 1), (inter / total if total else 1.0)


def train_step(model, opt, amp, memfmt, x_all, y_all, batch_idx, transforms) -> torch.Tensor:
    """One optimisation step on patches ``x_all[batch_idx]`` (already on the device), each in its dihedral form
    ``transforms[i]``, augmented on the fly on tensors. Returns the detached batch loss."""
    x = dihedral_batch(x_all[batch_idx], transforms).contiguous(memory_format=memfmt)
    y = dihedral_batch(y_all[batch_idx][:, None], transforms)[:, 0]
    with amp():
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _config_hash(spec: ArchSpec, cfg: TrainConfig, seed: int, patch_summary: dict, arrays) -> str:
    """Identity of a training run: a checkpoint resumes only a run of the same architecture, settings, seed, patch
    data (the arrays themselves, not only their summary) and training code (the import closure of this module)."""
    from rfseg.provenance import fingerprint

    h = hashlib.sha256(json.dumps([spec.to_dict(), asdict(cfg), seed, patch_summary, fingerprint(__name__)],
                                  sort_keys=True).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def _load_checkpoint(path: Path, config_hash: str):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: the checkpoint is corrupt or unreadable ({type(e).__name__}): delete it to "
                        f"start this training run over") from None
    if ckpt.get("config_hash") != config_hash:
        print(f"checkpoint {path} is from another configuration: starting over", flush=True)
        return None
    return ckpt


class _Preempted(Exception):
    pass


def _raise_preempted(signum, frame):
    raise _Preempted(signal.Signals(signum).name)


def train(patch_dir, out_dir, spec: ArchSpec, seed: int, cfg: TrainConfig, threads: int = 1,
          extra_meta: dict | None = None) -> dict:
    """Train one model and write ``model.pt``, ``model.json``, ``history.csv`` (and ``checkpoint.pt``, ``best.pt``)
    into ``out_dir``. Resumes from ``checkpoint.pt`` when it belongs to the same configuration."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, threads))
    device = pick_device(cfg.device)
    summary = data.load_summary(patch_dir)
    size = summary["patch_size_px"]
    rf = receptive_field(build_model(spec))
    if rf > size:
        raise UserError(f"architecture {spec.name} has a receptive field of {rf} px, larger than the "
                        f"{size} px patches: choose smaller pools or larger patches")
    if size % spec.downsampling:
        raise UserError(f"patch size {size} px is not a multiple of {spec.downsampling} (product of the pools of "
                        f"{spec.name}): change patches.size")
    x_train_np, y_train_np = (np.array(a) for a in data.load_split(patch_dir, "train"))
    x_val_np, y_val_np = (np.array(a) for a in data.load_split(patch_dir, "val"))
    x_train, y_train, x_val, y_val = map(torch.from_numpy, (x_train_np, y_train_np, x_val_np, y_val_np))
    if len(x_train) == 0 or len(x_val) == 0:
        raise UserError(f"{patch_dir}: the train or val split has no patches: add micrographs or lower "
                        f"patches.min_particle_px")
    if device.type == "cuda":
        configure_cuda(deterministic=True)
    memfmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_train = x_train[:, None].to(device).contiguous(memory_format=memfmt)
    y_train = y_train.long().to(device)
    x_val = x_val[:, None].to(device).contiguous(memory_format=memfmt)
    y_val = y_val.long().to(device)

    model = build_model(spec, seed=seed).to(device, memory_format=memfmt)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    dtype = autocast_dtype(cfg.precision, device)

    amp = autocast_factory(device, dtype)
    chash = _config_hash(spec, cfg, seed, summary, (x_train_np, y_train_np, x_val_np, y_val_np))
    ckpt_path, history, start, best = out / "checkpoint.pt", [], 0, (-1.0, -1)
    if ckpt_path.exists() and (ckpt := _load_checkpoint(ckpt_path, chash)):
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        history, start, best = ckpt["history"], ckpt["epoch"], tuple(ckpt["best"])
        print(f"resumed from {ckpt_path} after epoch {start}", flush=True)

    old_handler = signal.signal(signal.SIGTERM, _raise_preempted)
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            idx, ks = epoch_plan(seed, epoch, len(x_train), cfg.augment)
            idx = idx.to(device)  # the transform ids stay on the host: choosing per-transform groups needs no sync
            loss_sum = 0.0
            for i in range(0, len(idx), cfg.batch_size):
                b, k = idx[i:i + cfg.batch_size], ks[i:i + cfg.batch_size]
                loss_sum += train_step(model, opt, amp, memfmt, x_train, y_train, b, k) * len(b)
            train_loss = float(loss_sum) / len(idx)
            if not math.isfinite(train_loss):
                raise UserError(f"{out}: training diverged in epoch {epoch + 1} (the loss is not finite); the last "
                                f"checkpoint, if any, is kept: try training.precision fp32 or a lower "
                                f"training.lr")
            val_loss, val_dice = validate(model, x_val, y_val, cfg.batch_size, amp)
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                            "val_dice": val_dice, "seconds": time.perf_counter() - t0})
            print(f"epoch {epoch + 1}/{cfg.epochs} train_loss {history[-1]['train_loss']:.4f} val_loss "
                  f"{val_loss:.4f} val_dice {val_dice:.4f} ({history[-1]['seconds']:.1f} s)", flush=True)
            if val_dice > best[0]:
                best = (val_dice, epoch + 1)
                with io.atomic_path(out / "best.pt") as tmp:
                    torch.save(model.state_dict(), tmp)
            with io.atomic_path(ckpt_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                            "history": history, "best": list(best), "torch_rng": torch.get_rng_state(),
                            "config_hash": chash}, tmp)
            patience = cfg.early_stopping_patience
            if patience and epoch + 1 - best[1] >= patience:
                print(f"early stopping: no val-dice gain for {patience} epochs", flush=True)
                break
    except _Preempted as e:
        print(f"stopped by {e}; the checkpoint of the last finished epoch is kept for resuming", flush=True)
        raise SystemExit(143) from None
    finally:
        signal.signal(signal.SIGTERM, old_handler)

    state = torch.load(out / "best.pt", weights_only=True) if cfg.select == "best" else model.state_dict()
    state = {k: v.contiguous() for k, v in state.items()}
    px = summary["pixel_size_nm"]
    meta = {
        "arch": spec.to_dict(), "name": spec.name, "params": count_params(model), "rf_px": rf,
        "rf_nm": None if px is None else rf * px, "pixel_size_nm": px, "patch_size_px": size, "seed": seed, "training": asdict(cfg),
        "normalisation": "per-micrograph standardisation (mean 0, std 1) after the dataset's preprocessing",
        "preprocess": summary.get("preprocess"),
        "weights": cfg.select, "best_epoch": best[1], "best_val_dice": best[0], "epochs_run": len(history),
        "final": history[-1] if history else None, "train_patches": len(x_train), "val_patches": len(x_val),
        "device": str(device), "autocast": str(dtype).replace("torch.", "") if dtype else "fp32",
        "versions": {"torch": torch.__version__, "rfseg": __import__("rfseg").__version__},
        **(extra_meta or {}),
    }
    io.write_csv(pd.DataFrame(history), out / "history.csv")
    with io.atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    io.write_json(meta, out / "model.json")
    return meta


def load_model(model_dir_or_pt, device="cpu"):
    """Rebuild a trained model from ``model.json`` + ``model.pt``. Returns (model in eval mode, metadata)."""
    p = Path(model_dir_or_pt)
    pt = p / "model.pt" if p.is_dir() else p
    js = pt.with_name("model.json")
    if not js.is_file() or not pt.is_file():
        raise UserError(f"{p}: a model needs model.pt and model.json side by side (as 'rfseg train' writes them)")
    meta = json.loads(js.read_text())
    spec = ArchSpec.from_dict(meta["arch"])
    model = build_model(spec)
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{pt}: cannot load the weights ({type(e).__name__}); is the file complete?") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"{pt}: the weights do not fit architecture {spec.name} from {js}: the two files belong "
                        f"to different models") from None
    return model.to(device).eval(), meta
