"""Stage: micrographs and masks -> standardised TIFFs with their pixel size (``rfseg preprocess``).

Input is a manifest (CSV with image, mask, optional pixel_size_nm and group columns) or an images glob with a masks
pattern using ``{stem}``. Output: ``<stem>.tif`` (float32, pixel size in nm in the TIFF, which Fiji shows),
``<stem>_mask.tif`` (uint8 0/1), ``manifest.csv`` and ``preprocess.json`` (the recipe), in a folder written to a
temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io
from rfseg.blocks.preprocess import Recipe, apply_recipe
from rfseg.errors import UserError


def _check_inputs(manifest: pd.DataFrame) -> None:
    """Every file exists and every stem is unique, checked before any work."""
    stems = {}
    for rec in manifest.to_dict("records"):
        io._checked_path(rec["image"], io.IMAGE_SUFFIXES, "image")
        io._checked_path(rec["mask"], io.MASK_SUFFIXES, "mask")
        stem = Path(rec["image"]).stem
        if stem in stems:
            raise UserError(f"{rec['image']}: two images share the name {stem!r} ({stems[stem]}): rename one")
        stems[stem] = rec["image"]


def preprocess(out_dir, *, manifest=None, images: str | None = None, masks: str | None = None,
               pixel_size_nm: float | None = None, xray_threshold: float | None = None, xray_passes: int = 2,
               flat_field: str = "none", flat_field_sigma_nm: float | None = None,
               target_pixel_size_nm: float | None = None, uncalibrated: bool = False) -> pd.DataFrame:
    """Preprocess every micrograph of a dataset into ``out_dir``.

    Parameters
    ----------
    manifest : path of a manifest CSV, or a DataFrame with image and mask columns
    images, masks : an images glob and a masks pattern with ``{stem}`` (instead of ``manifest``)
    pixel_size_nm : nm/px that overrides the files' own (a manifest's pixel_size_nm column overrides per file)
    xray_threshold, xray_passes, flat_field, flat_field_sigma_nm, target_pixel_size_nm : the :class:`Recipe`
    uncalibrated : accept micrographs without a pixel size; lengths then stay in px and every nm quantity
        downstream is left empty, never guessed

    Returns
    -------
    The written manifest: image, mask, pixel_size_nm, source_sha256 (of the source micrograph's file), group,
    source_image, source_mask, source_pixel_size_nm (the pixel size the source was read at), rows, cols,
    particle_fraction.
    """
    recipe = Recipe(xray_threshold=xray_threshold, xray_passes=xray_passes, flat_field=flat_field,
                    flat_field_sigma_nm=flat_field_sigma_nm, target_pixel_size_nm=target_pixel_size_nm)
    if manifest is None:
        if not images or not masks:
            raise UserError("give a manifest (--manifest) or an images glob with a masks pattern (--images, --masks)")
        manifest = io.manifest_from_glob(images, masks)
    elif not isinstance(manifest, pd.DataFrame):
        manifest = io.read_manifest(manifest)
    _check_inputs(manifest)
    rows = []
    with io.atomic_dir(out_dir, reads=list(manifest["image"]) + list(manifest["mask"])) as tmp:
        for rec in manifest.to_dict("records"):
            own = rec.get("pixel_size_nm")
            img = io.read_image(rec["image"], pixel_size_nm if io.is_missing(own) else own)
            if uncalibrated:
                img.pixel_size_yx_nm = None
            elif img.pixel_size_yx_nm is None:
                raise UserError(f"{img.path}: the file has no pixel size: {io.MISSING_PIXEL_SIZE_FIX}, or "
                                f"--uncalibrated (config: uncalibrated: true) to work in px")
            mask = io.read_mask(rec["mask"], img.data.shape)
            try:
                data, mask, px = apply_recipe(img.data, mask, img.pixel_size_yx_nm, recipe)
            except UserError as e:
                raise UserError(f"{img.path}: {e}") from None
            stem = Path(rec["image"]).stem
            image_name, mask_name = artifacts.preprocessed_names(stem)
            io.write_tiff(tmp / image_name, data, px)
            io.write_tiff(tmp / mask_name, mask, px)
            group = rec.get("group")
            rows.append({"image": image_name, "mask": mask_name, "pixel_size_nm": px,
                         "source_sha256": io.sha256(rec["image"]),
                         "group": stem if io.is_missing(group) else str(group), "source_image": rec["image"],
                         "source_mask": rec["mask"], "source_pixel_size_nm": img.pixel_size_nm if
                         img.pixel_size_yx_nm is None or np.isclose(*img.pixel_size_yx_nm, rtol=1e-4) else None,
                         "rows": data.shape[0], "cols": data.shape[1], "particle_fraction": float(mask.mean())})
        df = pd.DataFrame(rows)
        if not (df["particle_fraction"] > 0).any():
            raise UserError(f"every mask of the {len(df)} micrographs is empty (no nonzero pixel): check the masks "
                            f"(--masks / the manifest's mask column; nonzero = particle)")
        artifacts.write_preprocessed_index(tmp, df, recipe.to_dict())
    return df
