"""A trained model on a dataset's test split -> one tidy metrics row, per-particle recovery, probability and
false-negative maps; and the aggregation of rows into mean ± std over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rfseg import data, io, metrics
from rfseg.errors import UserError
from rfseg.predict import particle_probability
from rfseg.train import load_model, pick_device

METRICS = ["hard_dice", "soft_dice", "global_dice", "iou", "precision", "recall"]
KEYS = ["dataset", "method", "arch", "blocks", "pools", "dilations", "mode", "params", "rf_px", "rf_nm"]


@torch.no_grad()
def predict_patches(model, images: np.ndarray, batch_size: int = 16, device="cpu", tta: bool = False) -> np.ndarray:
    """Particle probability (n, H, W) float32 for patches (n, H, W) float32; with ``tta`` the mean over the 8
    dihedral transforms."""
    out = np.empty(images.shape, np.float32)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size]))[:, None].to(device)
        out[i:i + batch_size] = particle_probability(model, x, tta).cpu().numpy()
    return out


def _px_text(px) -> str:
    return "an unknown pixel size" if px is None else f"{px:.5g} nm/px"


def arch_columns(meta_arch: dict) -> dict:
    return {"blocks": meta_arch["blocks"], "pools": ",".join(map(str, meta_arch["pools"])),
            "dilations": ",".join(map(str, meta_arch["dilations"])), "mode": meta_arch["mode"]}


def evaluate(model_dir, patch_dir, out_dir, dataset: str, tta: bool = False, device: str = "auto",
             threads: int = 1, batch_size: int = 16, pixel_tolerance: float = 0.01) -> dict:
    """Evaluate one trained model on the test patches; writes metrics.csv (one row), particles.csv,
    probabilities.tif and false_negatives.tif into ``out_dir``. Returns the metrics row."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    model, meta = load_model(model_dir, dev)
    summary = data.load_summary(patch_dir)
    px = summary["pixel_size_nm"]
    if (meta["pixel_size_nm"] is None) != (px is None) or (
            px is not None and abs(meta["pixel_size_nm"] - px) > pixel_tolerance * px):
        raise UserError(f"{model_dir}: the model was trained at {_px_text(meta['pixel_size_nm'])} but {patch_dir} "
                        f"is at {_px_text(px)}: resample the data (target_pixel_size_nm) or use a matching model")
    images, masks = data.load_split(patch_dir, "test")
    if len(images) == 0 or masks.sum() == 0:
        raise UserError(f"{patch_dir}: the test split has no particle pixels: add micrographs or change the split")
    if images.shape[-1] % (k := int(np.prod(meta["arch"]["pools"]))):
        raise UserError(f"{patch_dir}: patches of {images.shape[-1]} px do not fit {meta['name']} (multiple of {k})")
    prob = predict_patches(model, images, batch_size, dev, tta)
    truth = masks.astype(bool)
    row = {"dataset": dataset, "method": "unet", "arch": meta["name"], **arch_columns(meta["arch"]),
           "params": meta["params"], "rf_px": meta["rf_px"], "rf_nm": np.nan if px is None else meta["rf_px"] * px,
           "pixel_size_nm": np.nan if px is None else px,
           "seed": meta["seed"], "tta": tta, "n_test_patches": len(images),
           **metrics.segmentation_scores(prob, truth)}
    out = Path(out_dir)
    particles = pd.DataFrame(metrics.particle_recovery(prob > 0.5, truth, px))
    particles.insert(0, "seed", meta["seed"])
    particles.insert(0, "arch", meta["name"])
    particles.insert(0, "dataset", dataset)
    io.write_csv(particles, out / "particles.csv")
    io.write_tiff(out / "probabilities.tif", prob, px)
    io.write_tiff(out / "false_negatives.tif", truth & (prob <= 0.5), px)
    io.write_csv(pd.DataFrame([row]), out / "metrics.csv")
    return row


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per (dataset, method, architecture).

    Columns: the key columns, ``n_seeds`` and ``<metric>_mean`` / ``<metric>_std`` (sample std, ddof 1; NaN for
    one seed)."""
    keys = [k for k in KEYS if k in rows.columns]
    g = rows.fillna({k: "" for k in keys}).groupby(keys, sort=False, dropna=False)
    out = g[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out.insert(0, "n_seeds", g.size())
    return out.reset_index().sort_values(["dataset", "method", "blocks", "rf_px"], na_position="first")
