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
from rfseg.blocks.inference import AUTO_TILE, DEFAULT_OVERLAP
from rfseg.blocks.particles import drop_labels, particle_filter, particle_table
from rfseg.blocks.predictor import MISMATCH, Predictor
from rfseg.blocks.runtime import set_threads
from rfseg.errors import UserError, check_choice


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


def predict(model_dirs, images, out_dir, *, device: str = "auto", tta: bool = False, batch_size: int = 8,
            tile: int | str = AUTO_TILE, overlap: float = DEFAULT_OVERLAP, precision: str = "auto",
            compile: bool | str = "auto",
            on_pixel_mismatch: str = "resample", pixel_tolerance: float = 0.01, pixel_size_nm: float | None = None,
            min_area_px: float | None = None, min_area_nm2: float | None = None, keep_all: bool = False,
            split_touching: bool = False, split_min_distance_nm: float | None = None, drop_border: bool = False,
            threads: int = 1, progress=None) -> pd.DataFrame:
    """Segment every image with the ensemble of ``model_dirs``.

    Writes, per micrograph, ``<stem>_prob.tif`` (float32), ``<stem>_mask.tif`` (uint8), ``<stem>_uncertainty.tif``
    (ensembles) and ``<stem>_particles.csv``, plus ``summary.csv``, into ``out_dir``; returns the summary.

    Parameters
    ----------
    tile : "auto": tiles fitted to each micrograph, overlapping by the network's context and cut at the middle of the
        overlap, which gives the whole-micrograph result; or a tile size in px: Gaussian-blended tiles
        (:func:`rfseg.blocks.inference.sliding_window_probability`)
    overlap : with a tile size in px, the tile overlap as a fraction of the tile, 0 to
        :data:`rfseg.blocks.inference.MAX_OVERLAP`
    compile : "auto" (compile on a CPU once the job is large enough to pay for it), "on" or "off": run the models
        through torch.compile with freezing (12-18 s once, then faster tiles;
        :data:`rfseg.blocks.predictor.COMPILE_AFTER_MPX`)
    on_pixel_mismatch : "resample" a micrograph at another pixel size to the models', or "refuse" it
    pixel_size_nm : nm/px for micrographs without one
    min_area_px, min_area_nm2, keep_all, split_touching, split_min_distance_nm : the particle post-processing
        (:func:`rfseg.blocks.particles.particle_filter`); by default specks far below the smallest particle the
        network was trained on are dropped and holes filled
    drop_border : drop particles touching the image border (they are always flagged in ``touches_border``)
    progress : optional wrapper of the image iterator (a progress bar)
    """
    check_choice("--on-pixel-mismatch", on_pixel_mismatch, MISMATCH)
    paths = expand_images(images)
    _check_images(paths)
    io.check_output_dir(out_dir, reads=[*paths, *model_dirs])
    set_threads(threads)
    predictor = Predictor(model_dirs, device=device, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
                          precision=precision, compile=compile, job_micrographs=len(paths))
    rows = []
    with io.atomic_dir(out_dir, reads=[*paths, *model_dirs]) as tmp:
        for path in progress(paths) if progress else paths:
            img = io.read_image(path, pixel_size_nm)
            prob, members, px_img = predictor.micrograph(img.data, img.pixel_size_yx_nm, where=path,
                                                         on_pixel_mismatch=on_pixel_mismatch,
                                                         tolerance=pixel_tolerance)
            rule = particle_filter(predictor.metas[0], px_img, min_area_px=min_area_px, min_area_nm2=min_area_nm2,
                                   keep_all=keep_all, split=split_touching,
                                   split_min_distance_nm=split_min_distance_nm)
            labels, dropped = rule.apply(prob > 0.5)
            table = particle_table(labels, prob, px_img)
            border = int(table["touches_border"].sum())
            if drop_border:
                labels, table = drop_labels(labels, table, table["touches_border"])
            for k, v in rule.columns().items():
                table[k] = v
            mask = labels > 0
            stem = path.stem
            io.write_tiff(tmp / f"{stem}_prob.tif", prob, px_img)
            io.write_tiff(tmp / f"{stem}_mask.tif", mask.astype(np.uint8), px_img)
            if len(predictor) > 1:
                io.write_tiff(tmp / f"{stem}_uncertainty.tif", members.std(0), px_img)
            io.write_csv(table, tmp / f"{stem}_particles.csv")
            rows.append({"image": str(path), "pixel_size_nm": px_img, "particles": len(table),
                         "touching_border": border, "dropped_small": dropped,
                         "dropped_border": border if drop_border else 0, "min_area_px2": rule.min_area_px,
                         **{f"{s}_diameter_{u}": getattr(table[f"equivalent_diameter_{u}"], s)() if len(table)
                            else np.nan for u in ("px", "nm") for s in ("mean", "median")},
                         "coverage": float(mask.mean()), "models": len(predictor),
                         "arch": predictor.metas[0].get("model_name", predictor.metas[0]["name"]),
                         "filter": rule.rule + ("; border particles dropped" if drop_border else "")})
        summary = pd.DataFrame(rows)
        io.write_csv(summary, tmp / "summary.csv")
    return summary
