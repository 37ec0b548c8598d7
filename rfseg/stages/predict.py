"""Stage: segment whole micrographs with model bundles and measure the particles (``rfseg predict``).

A micrograph of any size is read with its pixel size, given the preprocessing its models were trained with (the
recipe in the bundle), resampled to the models' pixel size (or refused), segmented by sliding-window inference, and
brought back onto its own grid. Several bundles (the seeds of one architecture, the folds of a published network)
are averaged into a mean probability and a per-pixel uncertainty (their standard deviation). The whole run is
written to a temporary folder that replaces ``out_dir`` only when every micrograph is done.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import bundle, io
from rfseg.blocks.inference import compiled, sliding_window_probability
from rfseg.blocks.particles import drop_labels, label_particles, particle_table
from rfseg.blocks.preprocess import Recipe, apply_recipe
from rfseg.blocks.runtime import pick_device, set_threads
from rfseg.errors import UserError


def select_best(summary_csv, dataset: str, model_dirs) -> list[Path]:
    """The bundles among ``model_dirs`` of the architecture with the highest mean hard dice on ``dataset``."""
    if not Path(summary_csv).is_file():
        raise UserError(f"{summary_csv}: summary not found (--select-best): run the sweep first")
    s = pd.read_csv(summary_csv)
    s = s[(s["dataset"] == dataset) & (s["method"] == "unet")]
    if s.empty:
        raise UserError(f"{summary_csv}: no network results for dataset {dataset!r}: check --dataset "
                        f"(config: predict.dataset)")
    best = s.sort_values("hard_dice_mean", ascending=False)["arch"].iloc[0]
    chosen = [Path(d) for d in model_dirs if bundle.read_bundle_meta(d)["name"] == best]
    if not chosen:
        raise UserError(f"the best architecture {best} has no trained model among the given folders")
    return chosen


def expand_images(patterns) -> list[Path]:
    """Files named or matched by glob patterns, in order, each once; UserError for a pattern matching nothing."""
    paths = []
    for p in patterns:
        hits = sorted(glob.glob(str(p))) if any(c in str(p) for c in "*?[") else [str(p)]
        if not hits:
            raise UserError(f"{p}: matches no file: check the image path or pattern")
        paths += hits
    return [Path(p) for p in dict.fromkeys(paths)]


def _check_images(paths: list[Path]) -> None:
    stems: dict[str, Path] = {}
    for p in paths:
        io._checked_path(p, io.IMAGE_SUFFIXES, "image")
        if p.stem in stems:
            raise UserError(f"{p}: another input has the same name {p.stem!r} ({stems[p.stem]}), and the outputs "
                            f"are named by it: rename one or segment them into separate --out folders")
        stems[p.stem] = p


def _load_ensemble(model_dirs, device, compile_models):
    models = [bundle.load_bundle(d, device) for d in model_dirs]
    metas = [m for _, m in models]
    for d, m in zip(model_dirs[1:], metas[1:]):
        if m["pixel_size_nm"] != metas[0]["pixel_size_nm"] or Recipe.from_dict(m.get("preprocess")) != \
                Recipe.from_dict(metas[0].get("preprocess")):
            raise UserError(f"{d}: trained on data of another pixel size or preprocessing than {model_dirs[0]}: "
                            f"ensemble models of one dataset only")
    nets = [compiled(m) if compile_models else m for m, _ in models]
    return nets, metas


def predict(model_dirs, images, out_dir, *, device: str = "auto", tta: bool = False, batch_size: int = 8,
            tile: int | None = None, overlap: float = 0.5, precision: str = "auto", compile: bool = False,
            on_pixel_mismatch: str = "resample", pixel_tolerance: float = 0.01, pixel_size_nm: float | None = None,
            min_area_nm2: float = 0.0, drop_border: bool = False, threads: int = 1, progress=None) -> pd.DataFrame:
    """Segment every image with the ensemble of ``model_dirs``.

    Writes, per micrograph, ``<stem>_prob.tif`` (float32), ``<stem>_mask.tif`` (uint8), ``<stem>_uncertainty.tif``
    (ensembles) and ``<stem>_particles.csv``, plus ``summary.csv``, into ``out_dir``; returns the summary.

    Parameters
    ----------
    tile : tile size in px (default: the training patch size)
    overlap : tile overlap as a fraction of the tile, 0 to :data:`rfseg.blocks.inference.MAX_OVERLAP`
    compile : run the models through torch.compile with freezing (10-15 s once, then faster tiles)
    on_pixel_mismatch : "resample" a micrograph at another pixel size to the models', or "refuse" it
    pixel_size_nm : nm/px for micrographs without one
    progress : optional wrapper of the image iterator (a progress bar)
    """
    if on_pixel_mismatch not in ("resample", "refuse"):
        raise UserError(f"--on-pixel-mismatch must be resample or refuse, got {on_pixel_mismatch!r}")
    if not model_dirs:
        raise UserError("no model given: the first arguments must be model folders with model.pt and model.json")
    paths = expand_images(images)
    _check_images(paths)
    io.check_output_dir(out_dir, reads=[*paths, *model_dirs])
    set_threads(threads)
    dev = pick_device(device)
    models, metas = _load_ensemble(list(model_dirs), dev, compile)
    px_model = metas[0]["pixel_size_nm"]
    tile = metas[0]["patch_size_px"] if tile is None else tile
    recipe = Recipe.from_dict(metas[0].get("preprocess"))
    rows = []
    with io.atomic_dir(out_dir, reads=[*paths, *model_dirs]) as tmp:
        for path in progress(paths) if progress else paths:
            img = io.read_image(path, pixel_size_nm)
            px_img, target = None, None
            if px_model is not None:
                if img.pixel_size_yx_nm is None:
                    raise UserError(f"{path}: the file has no pixel size but the model was trained at {px_model:g} "
                                    f"nm/px: give --pixel-size (config: predict.pixel_size_nm)")
                py, px_x = img.pixel_size_yx_nm
                px_img = float(np.sqrt(py * px_x))
                if max(abs(py - px_model), abs(px_x - px_model)) > pixel_tolerance * px_model:
                    if on_pixel_mismatch == "refuse":
                        raise UserError(f"{path}: {px_img:g} nm/px but the model was trained at {px_model:g} "
                                        f"nm/px: use --on-pixel-mismatch resample or a matching model")
                    target = px_model
            original_shape = img.data.shape
            run_recipe = Recipe(**{**recipe.to_dict(), "target_pixel_size_nm": target})
            try:
                data, _, _ = apply_recipe(img.data, None, img.pixel_size_yx_nm if px_model else None, run_recipe)
            except UserError as e:
                raise UserError(f"{path}: {e}") from None
            probs = np.stack([sliding_window_probability(m, data, tile, overlap, batch_size, dev, tta, precision)
                              for m in models])
            prob = probs.mean(0)
            if target is not None and not np.isclose(*img.pixel_size_yx_nm, rtol=1e-3):
                px_img = px_model  # non-square input pixels: results stay on the model's square grid
            elif prob.shape != original_shape:  # back onto the micrograph's own grid
                from skimage.transform import resize

                prob = resize(prob, original_shape, order=1, preserve_range=True).astype(np.float32)
                if len(probs) > 1:
                    probs = np.stack([resize(p, original_shape, order=1, preserve_range=True) for p in probs])
            labels = label_particles(prob > 0.5)
            table = particle_table(labels, prob, px_img)
            drop = pd.Series(False, index=table.index)
            if drop_border:
                drop |= table["touches_border"]
            if min_area_nm2 > 0:
                area = table["area_nm2"] if px_img else table["area_px2"]
                drop |= area < min_area_nm2
            labels, table = drop_labels(labels, table, drop)
            mask = labels > 0
            stem = path.stem
            io.write_tiff(tmp / f"{stem}_prob.tif", prob, px_img)
            io.write_tiff(tmp / f"{stem}_mask.tif", mask.astype(np.uint8), px_img)
            if len(models) > 1:
                io.write_tiff(tmp / f"{stem}_uncertainty.tif", probs.std(0).astype(np.float32), px_img)
            io.write_csv(table, tmp / f"{stem}_particles.csv")
            rows.append({"image": str(path), "pixel_size_nm": px_img, "particles": len(table),
                         **{f"{s}_diameter_{u}": getattr(table[f"equivalent_diameter_{u}"], s)() if len(table)
                            else np.nan for u in ("px", "nm") for s in ("mean", "median")},
                         "coverage": float(mask.mean()), "models": len(models), "arch": metas[0]["name"]})
        summary = pd.DataFrame(rows)
        io.write_csv(summary, tmp / "summary.csv")
    return summary
