"""One predictor object over model bundles (as nnU-Net's): whole micrographs in, particle probability out.

A micrograph gets the preprocessing its models were trained with (the recipe in the bundles), is resampled to the
models' pixel size when it differs, is segmented by sliding-window inference with every model of the ensemble, and
the probability is brought back onto the micrograph's own grid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from rfseg.blocks import bundle
from rfseg.blocks.inference import (AUTO_TILE, DEFAULT_OVERLAP, check_tiling, compiled, sliding_window_probability,
                                    tile_plan)
from rfseg.blocks.models import fold_batch_norm
from rfseg.blocks.preprocess import Recipe, RecipeError, apply_recipe
from rfseg.blocks.runtime import pick_device
from rfseg.errors import UserError, check_choice

MISMATCH = ("resample", "refuse")
COMPILE = ("auto", "on", "off")
#: with ``compile="auto"`` on a CPU, the models are compiled once the job's tiles reach this many megapixels per
#: model, the current micrograph's and, when the job's size is known, those of the micrographs still to come (taken
#: as the size of the current one) included. The rent-or-buy rule: compile once the time eager inference would lose
#: against compiled inference pays for the compilation, i.e. after compile_s / (1/eager - 1/compiled) megapixels of
#: tiles, which never costs more than twice the better of "always" and "never" in hindsight. Measured by
#: benchmarks/predict_job.py (docs/explanation/performance.md) since eager inference folds batch norm, on an Intel
#: Xeon with AMX: 578 Mpx for the demo's N = 2 network, 683 for a published N = 4 one; the smallest keeps both within
#: that bound (before the folding, eager inference was slower and the break-even points 250-776 Mpx). On a GPU
#: compiling gains too little (docs/explanation/performance.md).
COMPILE_AFTER_MPX = 578.0


#: what a user of predict can do about a pixel size the models cannot take
PIXEL_SIZE_FIX = ("check the micrograph's pixel size (--pixel-size overrides the file's) and that the models suit it "
                  "(rfseg models lists the shipped models' pixel sizes)")
#: the fix a user of predict has for each preprocessing problem (the recipe is the models' own, not the user's)
_PREDICT_FIXES = {
    "flat_field": "the models were trained on raw intensities, so give the raw micrograph as the microscope wrote it",
    "pixel_size": PIXEL_SIZE_FIX,
    "constant": "it carries no information to segment",
}


def _refuse_duplicates(model_dirs) -> None:
    seen = {}
    for d in model_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise UserError(f"{d}: given twice (also as {seen[key]}): an ensemble of copies has no spread; give each "
                            f"model once")
        seen[key] = d


class Predictor:
    """The ensemble of ``model_dirs`` (bundles of one pixel size and preprocessing) with its inference settings.

    Parameters
    ----------
    tile : "auto" (tiles fitted to each micrograph and stitched exactly: the whole-micrograph result), a tile size in
        px (Gaussian-blended tiles overlapping by ``overlap``), or None for the models' training patch size
    overlap, batch_size, tta, precision : as :func:`rfseg.blocks.inference.sliding_window_probability`
    compile : "on" (or True) runs the models through torch.compile with freezing, "off" (or False) eager;
        "auto" compiles on a CPU once the job's tiles reach :data:`COMPILE_AFTER_MPX` per model
    job_micrographs : how many micrographs the job segments, when known: ``compile="auto"`` then counts the ones
        still to come as the size of the current one, so a job large enough compiles at its first micrograph instead
        of after segmenting that many tiles eagerly; None: only the tiles segmented so far count
    flat_field : None for the bundles' own flat field, or one of :data:`~rfseg.blocks.preprocess.FLAT_FIELDS` in its
        place ("none" for micrographs that are windows of larger ones flat-fielded as a whole)
    """

    def __init__(self, model_dirs, *, device: str = "auto", tile: int | str | None = AUTO_TILE,
                 overlap: float = DEFAULT_OVERLAP, batch_size: int = 8, tta: bool = False, precision: str = "auto",
                 compile: bool | str = "auto", job_micrographs: int | None = None, flat_field: str | None = None):
        compile = {True: "on", False: "off"}.get(compile, compile)
        check_choice("--compile", compile, COMPILE)
        model_dirs = list(model_dirs)
        if not model_dirs:
            raise UserError("no model given: give model folders with model.pt and model.json")
        self.device = pick_device(device)
        _refuse_duplicates(model_dirs)
        loaded = [bundle.load_bundle(d, self.device) for d in model_dirs]
        self.metas = [m for _, m in loaded]
        seen = {}
        for d, m in zip(model_dirs, self.metas):
            if m.get("weights_sha256") in seen:
                raise UserError(f"{d}: holds the same weights as {seen[m['weights_sha256']]}: an ensemble of copies "
                                f"has no spread; give each model once")
            seen[m.get("weights_sha256")] = d
        first = self.metas[0]
        self.recipe = Recipe.from_dict(first.get("preprocess"))
        self.pixel_size_nm = first["pixel_size_nm"]
        for d, m in zip(model_dirs[1:], self.metas[1:]):
            if m["pixel_size_nm"] != self.pixel_size_nm or Recipe.from_dict(m.get("preprocess")) != self.recipe:
                raise UserError(f"{d}: trained on data of another pixel size or preprocessing than {model_dirs[0]}: "
                                f"ensemble models of one dataset only")
        if flat_field is not None:
            self.recipe = replace(self.recipe, flat_field=flat_field)
        self.models = [fold_batch_norm(m) for m, _ in loaded]
        self.tile = first["patch_size_px"] if tile is None else tile
        self.overlap, self.batch_size, self.tta, self.precision = overlap, batch_size, tta, precision
        for model in self.models:
            check_tiling(self.tile, overlap, batch_size, model.spec)
        self.compile, self.compiled, self.tile_mpx = compile, False, 0.0
        self.job_micrographs, self.micrographs_seen = job_micrographs, 0
        if compile == "on":
            self._compile()

    def _compile(self):
        self.models = [compiled(m) for m in self.models]
        self.compiled = True

    def _count_tiles(self, shape):
        """Adds one micrograph's tile work to the job's and compiles when ``compile="auto"`` says it pays."""
        plan = tile_plan(shape, self.tile, self.overlap, self.models[0].spec)
        mpx = plan.tile_px * (8 if self.tta else 1) / 1e6
        self.tile_mpx += mpx
        self.micrographs_seen += 1
        to_come = max((self.job_micrographs or 0) - self.micrographs_seen, 0)
        if (self.compile == "auto" and not self.compiled and self.device.type == "cpu"
                and self.tile_mpx + to_come * mpx >= COMPILE_AFTER_MPX):
            self._compile()

    def __len__(self):
        return len(self.models)

    def target_pixel_size(self, pixel_size_yx_nm, where, on_pixel_mismatch="resample", tolerance=0.01):
        """The pixel size to resample a micrograph to (None: none needed), or a UserError naming ``where``."""
        px_model = self.pixel_size_nm
        if px_model is None:
            return None
        if pixel_size_yx_nm is None:
            raise UserError(f"{where}: the file has no pixel size but the model was trained at {px_model:g} nm/px: "
                            f"give --pixel-size (config: predict.pixel_size_nm)")
        py, px = pixel_size_yx_nm
        if max(abs(py - px_model), abs(px - px_model)) <= tolerance * px_model:
            return None
        if on_pixel_mismatch == "refuse":
            raise UserError(f"{where}: {np.sqrt(py * px):g} nm/px but the model was trained at {px_model:g} nm/px: "
                            f"use --on-pixel-mismatch resample or a matching model")
        return px_model

    def micrograph(self, image: np.ndarray, pixel_size_yx_nm, *, where="image", on_pixel_mismatch="resample",
                   tolerance: float = 0.01):
        """Particle probability of one raw micrograph.

        Parameters
        ----------
        image : (rows, cols) array, raw (the bundles' recipe is applied here)
        pixel_size_yx_nm : (float, float) or None

        Returns
        -------
        prob : (rows, cols) float32, the ensemble mean on the micrograph's grid (on the models' square grid when the
            micrograph's pixels are not square)
        members : (n_models, rows, cols) float32, each model's probability on the same grid
        pixel_size_nm : float or None, of the returned grid
        """
        data, px_data, target = self.prepare(image, pixel_size_yx_nm, where=where,
                                             on_pixel_mismatch=on_pixel_mismatch, tolerance=tolerance)
        self._count_tiles(data.shape)
        members = np.stack([sliding_window_probability(m, data, self.tile, self.overlap, self.batch_size,
                                                       self.device, self.tta, self.precision) for m in self.models])
        px_out = None if pixel_size_yx_nm is None or self.pixel_size_nm is None else float(
            np.sqrt(np.prod(pixel_size_yx_nm)))
        if target is not None and not np.isclose(*pixel_size_yx_nm, rtol=1e-3):
            px_out = px_data  # non-square input pixels: results stay on the models' square grid
        elif members.shape[1:] != image.shape:  # back onto the micrograph's own grid
            from skimage.transform import resize

            members = np.stack([resize(p, image.shape, order=1, preserve_range=True) for p in members])
        members = members.astype(np.float32)
        if not np.isfinite(members).all():
            raise UserError(f"{where}: the models' output holds NaN or infinite values: a model is broken or the "
                            f"micrograph holds values it cannot take; try --precision fp32, or another model")
        return members.mean(0), members, px_out

    def prepare(self, image: np.ndarray, pixel_size_yx_nm, *, where="image", on_pixel_mismatch="resample",
                tolerance: float = 0.01):
        """The micrograph as the models take it: the bundles' recipe applied and resampled to their pixel size.

        Returns (data float32 (rows', cols'), its pixel size in nm/px or None, the resampling target or None).
        Raises UserError naming ``where``, with the fix a user of ``rfseg predict`` has (the recipe is the
        models')."""
        target = self.target_pixel_size(pixel_size_yx_nm, where, on_pixel_mismatch, tolerance)
        recipe = Recipe(**{**self.recipe.to_dict(), "target_pixel_size_nm": target})
        try:
            data, _, px_data = apply_recipe(image, None, pixel_size_yx_nm if self.pixel_size_nm else None, recipe)
        except RecipeError as e:
            raise UserError(f"{where}: {e.problem}", fix=_PREDICT_FIXES[e.topic]) from None
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        return data, px_data, target
