"""Segment whole micrographs with trained models and measure the particles.

A micrograph of any size is read with its pixel size, brought to the models' pixel size (or refused), given the
training preprocessing recorded in the model bundle, and segmented by sliding-window inference: overlapping tiles,
each weighted by a Gaussian that falls off towards the tile edges, so that tile borders leave no seams (as in
nnU-Net). Several models (e.g. the seeds of one architecture) are averaged into a mean probability and a per-pixel
uncertainty (their standard deviation).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rfseg import io, preprocess
from rfseg.errors import UserError
from rfseg.patches import dihedral, dihedral_inverse


def gaussian_weight(tile: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """(tile, tile) float32 importance map: a Gaussian of std tile*sigma_scale, max 1, floored to keep it > 0."""
    c = (tile - 1) / 2
    g = np.exp(-0.5 * ((np.arange(tile) - c) / (tile * sigma_scale)) ** 2)
    w = np.outer(g, g)
    w /= w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles covering [0, length) with the given step; the last tile ends at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def particle_probability(model, x: torch.Tensor, tta: bool = False, amp=None,
                         memfmt=torch.contiguous_format) -> torch.Tensor:
    """Particle probability (B, H, W) float32 of a batch (B, 1, H, W); with ``tta`` the mean over the 8 dihedral
    transforms. ``amp`` is an autocast factory (see rfseg.train.autocast_factory); None runs in float32."""
    transforms = range(8) if tta else [0]
    p = 0
    for t in transforms:
        with amp() if amp else contextlib.nullcontext():
            logits = model(dihedral(x, t).contiguous(memory_format=memfmt))
        p = p + dihedral_inverse(class_probability(logits, 1), t)
    return p / len(transforms)


def class_probability(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax probability (B, H, W) float32 of class ``k`` from logits (B, classes, H, W). With two classes it is
    the sigmoid of the logit difference: the same number, a third of the time of a softmax over channels-last
    logits."""
    if logits.shape[1] == 2:
        return torch.sigmoid(logits[:, k].float() - logits[:, 1 - k].float())
    return torch.softmax(logits.float(), 1)[:, k]


class FrozenCompiled(torch.nn.Module):
    """An eval-mode network compiled by ``torch.compile`` with Inductor's *freezing* for inference: the weights
    become constants, so batch norm folds into the convolutions and oneDNN pre-packs their weights (2.4x the eager
    speed in bf16 on a 2-core CPU, README). The weights must not change afterwards; use it under ``torch.no_grad``.
    Compilation happens on the first call of each input shape."""

    def __init__(self, model):
        super().__init__()
        self.spec = model.spec
        self._compiled = torch.compile(model, dynamic=False)

    def forward(self, x):
        import torch._inductor.config

        # a config patch, not a global switch: freezing suits inference only, never a model still being trained
        with torch._inductor.config.patch(freezing=True):
            return self._compiled(x)


def compiled(model) -> FrozenCompiled:
    """The inference-compiled form of an eval-mode model (see :class:`FrozenCompiled`)."""
    return FrozenCompiled(model.eval())


def inference_precision(precision: str, device: torch.device) -> str:
    """The precision inference actually uses. "auto" means bfloat16 on a CPU with bf16 support (2-4x faster there)
    but float32 on a GPU, where these small networks measured faster without autocast at the default overlap (108
    against 75 Mpx/s at 50 % on an H200, README)."""
    return "fp32" if precision == "auto" and torch.device(device).type == "cuda" else precision


@torch.no_grad()
def sliding_window_probability(model, image: np.ndarray, tile: int, overlap: float = 0.5, batch_size: int = 8,
                               device="cpu", tta: bool = False, precision: str = "fp32") -> np.ndarray:
    """Particle probability (H, W) float32 of one preprocessed image (H, W) float32.

    The image is reflect-padded to at least one tile and to a multiple of the model's downsampling; tiles of
    ``tile`` px step by ``tile * (1 - overlap)``; predictions are blended with :func:`gaussian_weight`. Memory is two
    float32 image-sized accumulators plus one batch of tiles. ``precision`` "auto" runs the network in bfloat16
    (channels-last) on a CPU that supports it and in float32 on a GPU (:func:`inference_precision`); "fp32" is the
    reference."""
    from rfseg.train import autocast_dtype, autocast_factory

    device = torch.device(device)
    precision = inference_precision(precision, device)
    amp = autocast_factory(device, autocast_dtype(precision, device))
    memfmt = torch.channels_last if precision != "fp32" else torch.contiguous_format
    model = model.to(memory_format=memfmt)
    k = model.spec.downsampling
    if tile % k:
        raise UserError(f"tile size {tile} px is not a multiple of {k} (product of the pools of {model.spec.name})")
    h, w = image.shape
    th, tw = max(tile, math.ceil(h / k) * k), max(tile, math.ceil(w / k) * k)
    padded = np.pad(image, ((0, th - h), (0, tw - w)), mode="reflect" if min(h, w) > 1 else "edge")
    # tiles are cut and blended where the network runs: one transfer of the image each way, not one per tile
    padded = torch.from_numpy(padded.astype(np.float32, copy=False)).to(device)
    weight = torch.from_numpy(gaussian_weight(tile)).to(device)
    acc = torch.zeros((th, tw), dtype=torch.float32, device=device)
    norm = torch.zeros((th, tw), dtype=torch.float32, device=device)
    step = max(1, int(round(tile * (1 - overlap))))
    boxes = [(y, x) for y in tile_starts(th, tile, step) for x in tile_starts(tw, tile, step)]
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        x = torch.stack([padded[y:y + tile, x0:x0 + tile] for y, x0 in chunk])[:, None]
        p = particle_probability(model, x, tta, amp, memfmt).float()
        for (y, x0), pt in zip(chunk, p):
            acc[y:y + tile, x0:x0 + tile] += pt * weight
            norm[y:y + tile, x0:x0 + tile] += weight
    return (acc / norm)[:h, :w].cpu().numpy()


def particle_table(mask: np.ndarray, prob: np.ndarray, pixel_size_nm: float | None, min_area_nm2: float = 0.0,
                   drop_border: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per particle (8-connected component of ``mask``): label, centroid, area, equivalent diameter,
    major/minor axis, eccentricity, mean probability; lengths in nm (px when uncalibrated). Returns the table and
    the label image after the optional removal of border-touching and small particles."""
    from skimage.measure import label, regionprops_table
    from skimage.segmentation import clear_border

    labels = label(mask, connectivity=2)
    if drop_border:
        labels = clear_border(labels)
    px = pixel_size_nm or 1.0
    unit = "nm" if pixel_size_nm else "px"
    props = regionprops_table(labels, intensity_image=prob, properties=(
        "label", "centroid", "area", "equivalent_diameter_area", "axis_major_length", "axis_minor_length",
        "eccentricity", "intensity_mean"))
    t = pd.DataFrame({
        "label": props["label"],
        f"centroid_y_{unit}": props["centroid-0"] * px, f"centroid_x_{unit}": props["centroid-1"] * px,
        f"area_{unit}2": props["area"] * px**2,
        f"equivalent_diameter_{unit}": props["equivalent_diameter_area"] * px,
        f"major_axis_{unit}": props["axis_major_length"] * px, f"minor_axis_{unit}": props["axis_minor_length"] * px,
        "eccentricity": props["eccentricity"], "mean_probability": props["intensity_mean"],
    })
    if min_area_nm2 > 0:
        small = t.loc[t[f"area_{unit}2"] < min_area_nm2, "label"]
        labels[np.isin(labels, small)] = 0
        t = t[~t["label"].isin(small)]
    return t.reset_index(drop=True), labels


def select_best(summary_csv, dataset: str, model_dirs: list) -> list[Path]:
    """The model folders of the architecture with the highest mean hard dice on ``dataset`` in ``summary_csv``."""
    s = pd.read_csv(summary_csv)
    s = s[(s["dataset"] == dataset) & (s["method"] == "unet")]
    if s.empty:
        raise UserError(f"{summary_csv}: no network results for dataset {dataset!r}: check predict.dataset")
    best = s.sort_values("hard_dice_mean", ascending=False)["arch"].iloc[0]
    chosen = [Path(d) for d in model_dirs if Path(d).parent.name == best]
    if not chosen:
        raise UserError(f"the best architecture {best} has no trained model among the given folders")
    return chosen


def expand_images(patterns) -> list[Path]:
    import glob

    paths = []
    for p in patterns:
        hits = sorted(glob.glob(str(p))) if any(c in str(p) for c in "*?[") else [str(p)]
        if not hits:
            raise UserError(f"{p}: matches no file: check the image path or pattern")
        paths += hits
    return [Path(p) for p in dict.fromkeys(paths)]


def predict(model_dirs, images, out_dir, *, device="cpu", tta=False, batch_size=8, tile=None, overlap=0.5,
            precision="auto", compile=False,
            on_pixel_mismatch="resample", pixel_tolerance=0.01, pixel_size_nm=None, min_area_nm2=0.0,
            drop_border=False, threads=1, progress=True) -> pd.DataFrame:
    """Segment every image with the ensemble of ``model_dirs``; write per-image TIFFs and particle tables plus
    ``summary.csv`` into ``out_dir``. Returns the summary. ``compile`` runs the models through ``torch.compile``:
    tens of seconds once, then faster tiles (pays off from a few large micrographs on)."""
    from tqdm import tqdm

    from rfseg.train import load_model, pick_device

    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    models = [load_model(d, dev) for d in model_dirs]
    if compile:
        models = [(compiled(m), meta) for m, meta in models]
    metas = [m for _, m in models]
    px_model = metas[0]["pixel_size_nm"]
    for m in metas[1:]:
        if m["pixel_size_nm"] != px_model or m["preprocess"] != metas[0]["preprocess"]:
            raise UserError("the models were trained on data of different pixel size or preprocessing: ensemble "
                            "models of one dataset only")
    tile = tile or metas[0]["patch_size_px"]
    settings = dict(metas[0].get("preprocess") or {})
    settings.pop("target_pixel_size_nm", None)  # handled below, against the model's pixel size
    out = Path(out_dir)
    rows = []
    for path in tqdm(expand_images(images), desc="predict", disable=None if progress else True):
        img = io.read_image(path, pixel_size_nm)
        px_img, target = None, None
        if px_model is not None:
            if img.pixel_size_nm is None:
                raise UserError(f"{path}: the file has no pixel size but the model was trained at {px_model:g} nm/px:"
                                f" give --pixel-size")
            py, px_x = img.pixel_size_nm
            px_img = float(np.sqrt(py * px_x))
            if max(abs(py - px_model), abs(px_x - px_model)) > pixel_tolerance * px_model:
                if on_pixel_mismatch == "refuse":
                    raise UserError(f"{path}: {px_img:g} nm/px but the model was trained at {px_model:g} nm/px: "
                                    f"use --on-pixel-mismatch resample or a matching model")
                target = px_model
        original_shape = img.data.shape
        data, _, _ = preprocess.preprocess(img.data, None, img.pixel_size_nm if px_model else None,
                                           target_pixel_size_nm=target, **settings)
        probs = np.stack([sliding_window_probability(m, data, tile, overlap, batch_size, dev, tta, precision)
                          for m, _ in models])
        prob = probs.mean(0)
        if target is not None and not np.isclose(*img.pixel_size_nm, rtol=1e-3):
            px_img = px_model  # non-square input pixels: results stay on the model's square grid
        elif prob.shape != original_shape:  # back onto the micrograph's own grid
            from skimage.transform import resize

            prob = resize(prob, original_shape, order=1, preserve_range=True).astype(np.float32)
            if len(probs) > 1:
                probs = np.stack([resize(p, original_shape, order=1, preserve_range=True) for p in probs])
        mask = prob > 0.5
        table, labels = particle_table(mask, prob, px_img, min_area_nm2, drop_border)
        mask = labels > 0
        stem = path.stem
        io.write_tiff(out / f"{stem}_prob.tif", prob, px_img)
        io.write_tiff(out / f"{stem}_mask.tif", mask.astype(np.uint8), px_img)
        if len(models) > 1:
            io.write_tiff(out / f"{stem}_uncertainty.tif", probs.std(0).astype(np.float32), px_img)
        io.write_csv(table, out / f"{stem}_particles.csv")
        unit = "nm" if px_img else "px"
        diam = table[f"equivalent_diameter_{unit}"]
        rows.append({"image": str(path), "pixel_size_nm": px_img, "particles": len(table),
                     f"mean_diameter_{unit}": diam.mean() if len(diam) else np.nan,
                     f"median_diameter_{unit}": diam.median() if len(diam) else np.nan,
                     "coverage": float(mask.mean()), "models": len(models), "arch": metas[0]["name"]})
    summary = pd.DataFrame(rows)
    io.write_csv(summary, out / "summary.csv")
    return summary
