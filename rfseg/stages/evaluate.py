"""Stage: one model on a dataset's test split -> a tidy metrics row, per-particle recovery, probability and
false-negative maps (``rfseg evaluate``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, bundle, metrics
from rfseg.blocks.inference import predict_patches
from rfseg.blocks.models import table_columns
from rfseg.blocks.runtime import pick_device, set_threads
from rfseg.errors import UserError


def _px_text(px) -> str:
    return "an unknown pixel size" if px is None else f"{px:.5g} nm/px"


def evaluate(model_dir, patch_dir, out_dir, dataset: str, *, tta: bool = False, device: str = "auto",
             threads: int = 1, batch_size: int = 16, pixel_tolerance: float = 0.01) -> dict:
    """Evaluate one model bundle on the test patches of ``patch_dir``.

    Writes ``metrics.csv`` (one row), ``particles.csv``, ``probabilities.tif`` and ``false_negatives.tif`` into
    ``out_dir``; returns the metrics row. The model must have been trained at the patches' pixel size."""
    set_threads(threads)
    dev = pick_device(device)
    model, meta = bundle.load_bundle(model_dir, dev)
    summary = artifacts.read_patch_summary(patch_dir)
    px = summary["pixel_size_nm"]
    if (meta["pixel_size_nm"] is None) != (px is None) or (
            px is not None and abs(meta["pixel_size_nm"] - px) > pixel_tolerance * px):
        raise UserError(f"{model_dir}: the model was trained at {_px_text(meta['pixel_size_nm'])} but {patch_dir} "
                        f"is at {_px_text(px)}: resample the data (target_pixel_size_nm) or use a matching model")
    images, masks = artifacts.load_split(patch_dir, "test")
    if len(images) == 0 or masks.sum() == 0:
        raise UserError(f"{patch_dir}: the test split has no particle pixels: add micrographs or change the split")
    if images.shape[-1] % (k := int(np.prod(meta["arch"]["pools"]))):
        raise UserError(f"{patch_dir}: patches of {images.shape[-1]} px do not fit {meta['name']} (multiple of {k})")
    prob = predict_patches(model, images, batch_size, dev, tta)
    truth = masks.astype(bool)
    row = {"dataset": dataset, "method": "unet", "arch": meta["name"], **table_columns(meta["arch"]),
           "params": meta["params"], "rf_px": meta["rf_px"], "rf_nm": np.nan if px is None else meta["rf_px"] * px,
           "pixel_size_nm": np.nan if px is None else px,
           "seed": meta["seed"], "tta": tta, "n_test_patches": len(images),
           **metrics.segmentation_scores(prob, truth)}
    particles = pd.DataFrame(metrics.particle_recovery(prob > 0.5, truth, px))
    particles.insert(0, "seed", meta["seed"])
    particles.insert(0, "arch", meta["name"])
    particles.insert(0, "dataset", dataset)
    artifacts.write_eval(out_dir, row, particles, prob, truth, px)
    return row
