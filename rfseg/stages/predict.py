"""Stage: segment whole micrographs with model bundles and measure the particles (``rfseg predict``).

A micrograph of any size is read with its pixel size, given the preprocessing its models were trained with (the
recipe in the bundle), resampled to the models' pixel size (or refused), segmented by sliding-window inference, and
brought back onto its own grid. Several bundles (the seeds of one architecture, the folds of a published network)
are averaged into a mean probability and a per-pixel uncertainty (their standard deviation). The whole run is
written to a temporary folder that replaces ``out_dir`` only when every micrograph is done.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import bundle, io
from rfseg.blocks.inference import AUTO_TILE, DEFAULT_OVERLAP
from rfseg.blocks.overlay import index_html, overlay_rgb, png_bytes
from rfseg.blocks.particles import drop_labels, particle_filter, particle_table
from rfseg.blocks.predictor import MISMATCH, PIXEL_SIZE_FIX, Predictor
from rfseg.blocks.runtime import set_threads
from rfseg.errors import UserError, check_choice


def select_best(summary_csv, dataset: str, model_dirs) -> list[Path]:
    """The bundles among ``model_dirs`` of the architecture with the highest mean hard dice on ``dataset``, among
    those with no flagged run when there are any."""
    if not Path(summary_csv).is_file():
        raise UserError(f"{summary_csv}: summary not found (--select-best): run the sweep first")
    s = pd.read_csv(summary_csv)
    s = s[(s["dataset"] == dataset) & (s["method"] == "unet")]
    if s.empty:
        raise UserError(f"{summary_csv}: no network results for dataset {dataset!r}: check --dataset "
                        f"(config: predict.dataset)")
    if "n_flagged" in s and (s["n_flagged"] == 0).any():  # never the best of runs that learned nothing
        s = s[s["n_flagged"] == 0]
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


def _read(path: Path, pixel_size_nm: float | None):
    """(micrograph with the pixel size used, the file's own pixel size (y, x) or None, warning or None)."""
    img = io.read_image(path, pixel_size_nm)
    own = img.file_pixel_size_yx_nm
    warning = None
    if pixel_size_nm is not None and own is not None and not np.allclose(own, pixel_size_nm, rtol=1e-3):
        warning = (f"{path}: the file says {own[0]:g} x {own[1]:g} nm/px, --pixel-size gives {pixel_size_nm:g}: "
                   f"using {pixel_size_nm:g} (leave --pixel-size out to use the file's)")
    return img, own, warning


def _check_micrograph(predictor: Predictor, path: Path, pixel_size_nm, on_pixel_mismatch, tolerance) -> str | None:
    """Why ``path`` cannot be segmented (one line), or None, from its header alone (reading every micrograph twice
    would cost a large job a third of its time): readable, 2-D, a pixel size the models can be resampled to. What
    only the pixels show (a constant image) is found when the micrograph is segmented."""
    from rfseg.blocks.preprocess import RecipeError, check_resampling

    try:
        io._checked_path(path, io.IMAGE_SUFFIXES, "image")
        shape, own = io.read_header(path)
        if len(shape) != 2 or min(shape) < io.MIN_SIDE_PX:
            raise UserError(f"{path}: holds an array of shape {tuple(shape)}, not a 2-D micrograph of at least "
                            f"{io.MIN_SIDE_PX} px a side", fix="export a single frame")
        px = (float(pixel_size_nm),) * 2 if pixel_size_nm is not None else own
        for v in px or ():
            io.check_pixel_size(v, path, "the pixel size given" if pixel_size_nm is not None else
                                "the file's pixel size")
        target = predictor.target_pixel_size(px, path, on_pixel_mismatch, tolerance)
        if target is not None:
            try:
                check_resampling(px, target)  # the bound resampling itself applies
            except RecipeError as e:
                raise UserError(f"{path}: {e.problem}", fix=PIXEL_SIZE_FIX) from None
    except UserError as e:
        return str(e)
    return None


def predict(model_dirs, images, out_dir, *, device: str = "auto", tta: bool = False, batch_size: int = 8,
            tile: int | str = AUTO_TILE, overlap: float = DEFAULT_OVERLAP, precision: str = "auto",
            compile: bool | str = "auto",
            on_pixel_mismatch: str = "resample", pixel_tolerance: float = 0.01, pixel_size_nm: float | None = None,
            min_area_px: float | None = None, min_area_nm2: float | None = None, keep_all: bool = False,
            split_touching: bool = False, split_min_distance_nm: float | None = None, drop_border: bool = False,
            skip_bad: bool = False, threads: int = 1, progress=None, warn=None) -> pd.DataFrame:
    """Segment every image with the ensemble of ``model_dirs``.

    Writes, per micrograph, ``<stem>_prob.tif`` (float32), ``<stem>_mask.tif`` (uint8), ``<stem>_labels.tif``
    (uint16, the particle table's ``label``), ``<stem>_rois.zip`` (ImageJ ROIs), ``<stem>_uncertainty.tif``
    (ensembles) and ``<stem>_particles.csv`` (:meth:`Segmentation.write`), plus ``summary.csv``, into ``out_dir``;
    returns the summary.

    Every micrograph's header is checked before any is segmented (readable, 2-D, a pixel size the models can be
    resampled to): those that fail stop the run with one line listing them all, or, with ``skip_bad``, are left
    out and listed in ``summary.csv`` (``status``), as is one that fails when segmented (a constant image).

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
    pixel_size_nm : nm/px for micrographs without one; it overrides a file's own, with a warning, and
        ``summary.csv`` records both (``file_pixel_size_y_nm``, ``file_pixel_size_x_nm``)
    min_area_px, min_area_nm2, keep_all, split_touching, split_min_distance_nm : the particle post-processing
        (:func:`rfseg.blocks.particles.particle_filter`); by default specks far below the smallest particle the
        network was trained on are dropped and holes filled
    drop_border : drop particles touching the image border (they are always flagged in ``touches_border``)
    skip_bad : segment the micrographs that can be, and list the others in ``summary.csv``
    progress : optional wrapper of the image iterator (a progress bar)
    warn : called with each warning (one line); default: printed to stderr
    """
    import sys

    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    check_choice("--on-pixel-mismatch", on_pixel_mismatch, MISMATCH)
    for name, value in (("--min-area-px", min_area_px), ("--min-area-nm2", min_area_nm2)):
        if value is not None and not value >= 0:
            raise UserError(f"{name} must be a non-negative area, got {value:g}")
    paths = expand_images(images)
    _check_images(paths)
    io.check_output_dir(out_dir, reads=[*paths, *model_dirs])
    set_threads(threads)
    predictor = Predictor(model_dirs, device=device, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta,
                          precision=precision, compile=compile, job_micrographs=len(paths))
    bad = {p: why for p in paths
           if (why := _check_micrograph(predictor, p, pixel_size_nm, on_pixel_mismatch, pixel_tolerance))}
    if bad and (not skip_bad or len(bad) == len(paths)):
        reasons = "; ".join(bad.values())
        fix = "fix or remove them" + ("" if skip_bad else ", or pass --skip-bad to segment the rest")
        raise UserError(f"{len(bad)} of {len(paths)} micrographs cannot be segmented ({reasons})", fix=fix)
    good = [p for p in paths if p not in bad]
    predictor.job_micrographs = len(good)
    post = dict(min_area_px=min_area_px, min_area_nm2=min_area_nm2, keep_all=keep_all, split_touching=split_touching,
                split_min_distance_nm=split_min_distance_nm, drop_border=drop_border)
    rows, overlays, tables = [], {}, []
    with io.atomic_dir(out_dir, reads=[*paths, *model_dirs]) as tmp:
        for path in progress(good) if progress else good:
            img, own, warning = _read(path, pixel_size_nm)
            if warning:
                warn(warning)
            try:
                result = segment_micrograph(predictor, img.data, img.pixel_size_yx_nm, name=path.stem, where=path,
                                            file_pixel_size_yx_nm=own, on_pixel_mismatch=on_pixel_mismatch,
                                            tolerance=pixel_tolerance, **post)
            except UserError as e:
                if not skip_bad:
                    raise
                bad[path] = str(e)
                continue
            overlays[result.name] = result.write(tmp)
            rows.append(result.summary_row())
            tables.append(result.particles.assign(image=result.name))
        if not rows:
            raise UserError(f"none of the {len(paths)} micrographs could be segmented ({'; '.join(bad.values())})")
        rows += [{"image": str(p), "status": f"skipped: {why}", "models": len(predictor)} for p, why in bad.items()]
        summary = write_run(tmp, rows, overlays, tables)
    return summary


def write_run(folder, rows: list[dict], overlays: dict[str, bytes], tables: list[pd.DataFrame]) -> pd.DataFrame:
    """A run's ``summary.csv`` and ``index.html`` (every overlay, the summary, the particle sizes across the run;
    one self-contained page). Returns the summary."""
    summary = pd.DataFrame(rows)
    io.write_csv(summary, Path(folder) / "summary.csv")
    shown = summary[[c for c in ("image", "status", "particles", "median_diameter_nm", "median_diameter_px",
                                 "coverage", "models", "arch") if c in summary]]
    page = index_html(shown, overlays, pd.concat(tables, ignore_index=True), "rfseg predict")
    with io.atomic_path(Path(folder) / "index.html") as tmp:
        tmp.write_text(page)
    return summary


@dataclass
class Segmentation:
    """One micrograph segmented: arrays on the micrograph's own grid and its particle table.

    Attributes
    ----------
    name : str, the stem its output files are named by
    probability : (rows, cols) float32, the ensemble's mean particle probability
    labels : (rows, cols) int32, the particles after the filter, 0 = background; values are ``particles.label``
    members : (n_models, rows, cols) float32, each model's probability
    particles : DataFrame, one row per particle, lengths in px and nm (:func:`rfseg.blocks.particles.particle_table`)
    pixel_size_nm : float or None, of these arrays
    filter_rule, min_area_px, dropped_small, touching_border, dropped_border, arch : how they were made
    source : str, the file (or "the image array") it came from
    file_pixel_size_yx_nm : (float, float) or None, the pixel size the file itself states
    """

    name: str
    probability: np.ndarray
    labels: np.ndarray
    members: np.ndarray
    particles: pd.DataFrame
    pixel_size_nm: float | None
    filter_rule: str
    min_area_px: float
    dropped_small: int
    touching_border: int
    dropped_border: int
    arch: str
    source: str = ""
    file_pixel_size_yx_nm: tuple[float, float] | None = None
    image: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        """(rows, cols) bool, the particles' pixels."""
        return self.labels > 0

    @property
    def uncertainty(self) -> np.ndarray | None:
        """(rows, cols) float32, the models' standard deviation per pixel; None for a single model."""
        return self.members.std(0) if len(self.members) > 1 else None

    def files(self, folder) -> dict[str, Path]:
        folder = Path(folder)
        names = {"probability": "prob.tif", "mask": "mask.tif", "labels": "labels.tif", "rois": "rois.zip",
                 "particles": "particles.csv", "uncertainty": "uncertainty.tif", "overlay": "overlay.png"}
        return {k: folder / f"{self.name}_{v}" for k, v in names.items()}

    def overlay(self) -> bytes:
        """PNG: the micrograph with the particles outlined, the uncertainty shaded and a scale bar
        (:func:`rfseg.blocks.overlay.overlay_rgb`)."""
        image = self.probability if self.image is None else self.image
        return png_bytes(overlay_rgb(image, self.labels, self.pixel_size_nm, self.uncertainty))

    def write(self, folder) -> bytes:
        """Write this micrograph's files into ``folder``: probability, 0/1 mask, uint16 labels (the ``label`` column
        of the particle table), the particles as ImageJ polygon ROIs, the particle table, the overlay picture, and
        the uncertainty for an ensemble. The TIFFs carry the pixel size for Fiji. Returns the overlay PNG."""
        f = self.files(folder)
        picture = self.overlay()
        with io.atomic_path(f["overlay"]) as tmp:
            tmp.write_bytes(picture)
        io.write_tiff(f["probability"], self.probability, self.pixel_size_nm)
        io.write_tiff(f["mask"], self.mask.astype(np.uint8), self.pixel_size_nm)
        io.write_labels(f["labels"], self.labels, self.pixel_size_nm)
        io.write_rois(f["rois"], self.labels)
        if self.uncertainty is not None:
            io.write_tiff(f["uncertainty"], self.uncertainty, self.pixel_size_nm)
        io.write_csv(self.particles, f["particles"])
        return picture

    def save(self, folder) -> Path:
        """Write this micrograph into ``folder`` as ``rfseg predict`` does: its files and a one-row ``summary.csv``.
        The folder is new, empty, or one rfseg wrote (then replaced as a whole). Returns the folder."""
        with io.atomic_dir(folder) as tmp:
            write_run(tmp, [self.summary_row()], {self.name: self.write(tmp)}, [self.particles])
        return Path(folder)

    def summary_row(self) -> dict:
        """This micrograph's row of ``summary.csv``."""
        table = self.particles
        return {"image": self.source or self.name, "status": "ok", "pixel_size_nm": self.pixel_size_nm,
                **_file_pixel_size(self.file_pixel_size_yx_nm),
                "particles": len(table), "touching_border": self.touching_border,
                "dropped_small": self.dropped_small, "dropped_border": self.dropped_border,
                "min_area_px2": self.min_area_px,
                **{f"{s}_diameter_{u}": getattr(table[f"equivalent_diameter_{u}"], s)() if len(table) else np.nan
                   for u in ("px", "nm") for s in ("mean", "median")},
                "coverage": float(self.mask.mean()), "models": len(self.members), "arch": self.arch,
                "filter": self.filter_rule}


def segment_micrograph(predictor: Predictor, image: np.ndarray, pixel_size_yx_nm, *, name: str = "image",
                       where="image", file_pixel_size_yx_nm=None, on_pixel_mismatch: str = "resample",
                       tolerance: float = 0.01,
                       min_area_px: float | None = None, min_area_nm2: float | None = None, keep_all: bool = False,
                       split_touching: bool = False, split_min_distance_nm: float | None = None,
                       drop_border: bool = False) -> Segmentation:
    """Segment one raw micrograph (rows, cols) with ``predictor`` and measure its particles, as ``rfseg predict``
    does for each file (the same filter and table)."""
    prob, members, px_img = predictor.micrograph(image, pixel_size_yx_nm, where=where,
                                                 on_pixel_mismatch=on_pixel_mismatch, tolerance=tolerance)
    rule = particle_filter(predictor.metas[0], px_img, min_area_px=min_area_px, min_area_nm2=min_area_nm2,
                           keep_all=keep_all, split=split_touching, split_min_distance_nm=split_min_distance_nm)
    labels, dropped = rule.apply(prob > 0.5)
    table = particle_table(labels, prob, px_img)
    border = int(table["touches_border"].sum())
    if drop_border:
        labels, table = drop_labels(labels, table, table["touches_border"])
    for k, v in rule.columns().items():
        table[k] = v
    return Segmentation(name=str(name), probability=prob, labels=labels.astype(np.int32), members=members,
                        image=np.asarray(image),
                        particles=table, pixel_size_nm=px_img,
                        filter_rule=rule.rule + ("; border particles dropped" if drop_border else ""),
                        min_area_px=rule.min_area_px, dropped_small=dropped, touching_border=border,
                        dropped_border=border if drop_border else 0,
                        arch=predictor.metas[0].get("model_name", predictor.metas[0]["name"]), source=str(where),
                        file_pixel_size_yx_nm=file_pixel_size_yx_nm)


def _file_pixel_size(own) -> dict:
    """The file's own pixel size along y and x (NaN when it has none), as summary.csv records it."""
    return {"file_pixel_size_y_nm": np.nan if own is None else own[0],
            "file_pixel_size_x_nm": np.nan if own is None else own[1]}
