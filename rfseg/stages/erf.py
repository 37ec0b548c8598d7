"""Stage: effective receptive field (paper Fig. S9, ``rfseg erf``): how strongly each input pixel moves the decision of one output pixel.

For a trained model and real test patches, the map is the mean over patches of |d logit_particle(centre) / d input|,
normalised to a maximum of 1. Unlike the theoretical RF it is weighted: skip connections concentrate it near the
centre (Luo et al., 2016).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rfseg.blocks import artifacts, bundle, io
from rfseg.blocks.runtime import set_threads
from rfseg.errors import UserError


def effective_receptive_field(model, patches: np.ndarray) -> np.ndarray:
    """(H, W) float32 map in [0, 1] for patches (n, H, W): mean absolute input gradient of the centre pixel's
    particle logit (model in eval mode, float32)."""
    n, h, w = patches.shape
    x = torch.from_numpy(np.array(patches, np.float32))[:, None].requires_grad_(True)
    out = model(x)
    out[:, 1, h // 2, w // 2].sum().backward()
    g = x.grad.abs().mean(0)[0].numpy()
    return (g / g.max()).astype(np.float32) if g.max() > 0 else g


def run_erf(model_dir, patch_dir, out_path, n_patches: int = 16) -> dict:
    """Write the ERF map of one model on up to ``n_patches`` test patches as a TIFF (pixel size from the data)."""
    set_threads(1)
    model, meta = bundle.load_bundle(model_dir)
    images, _ = artifacts.load_split(patch_dir, "test")
    if len(images) == 0:
        raise UserError(f"{patch_dir}: the test split is empty: no patches to measure the ERF on")
    erf = effective_receptive_field(model, np.asarray(images[:n_patches]))
    px = artifacts.read_patch_summary(patch_dir)["pixel_size_nm"]
    io.write_tiff(out_path, erf, px)
    # The half-width holding half of the map's mass, as one number to compare with the theoretical RF.
    h, w = erf.shape
    yy, xx = np.mgrid[0:h, 0:w]
    cheb = np.maximum(abs(yy - h // 2), abs(xx - w // 2)).ravel()
    order = np.argsort(cheb)
    mass = np.cumsum(erf.ravel()[order]) / erf.sum()
    half = int(cheb[order][np.searchsorted(mass, 0.5)])
    return {"arch": meta["name"], "rf_px": meta["rf_px"], "erf50_px": 2 * half + 1, "out": str(Path(out_path))}
