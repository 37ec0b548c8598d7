"""Stage: preprocessed micrographs -> patches split by micrograph (``rfseg patches``).

Non-overlapping square patches; those with at most ``min_particle_px`` particle pixels are dropped (the paper: 400);
whole micrographs (or the manifest's groups) go to train, val and test, so no micrograph is in two splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, io, patches
from rfseg.blocks.particles import size_statistics
from rfseg.errors import UserError

FRACTIONS = (0.7, 0.1, 0.2)


def check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise UserError(f"split fractions (--fractions; config: split.fractions) must be three positive shares of "
                        f"train, val, test that sum to 1, got {list(fractions)}")
    return fractions


def make_patches(preprocessed_dir, out_dir, *, patch_size_px: int, min_particle_px: int = 400,
                 fractions=FRACTIONS, folds: int | None = None, fold: int = 0, dataset: str = "") -> dict:
    """Cut, filter and split the micrographs of a preprocessed folder into a patch folder.

    Writes ``<split>_images.npy`` (float32 (n, size, size)), ``<split>_masks.npy`` (uint8), ``index.csv`` (one row
    per patch: split, index in its split's arrays, source image, group, row/col in px, particle fraction) and
    ``summary.json``; ``folds``/``fold`` give k-fold cross-validation over micrographs instead of ``fractions``
    (:func:`rfseg.blocks.patches.kfold_groups`; the summary records both). Returns the summary."""
    fractions = check_fractions(fractions)
    if patch_size_px < 1:
        raise UserError(f"patch size (--size; config: patches.size) must be positive, got {patch_size_px}")
    manifest, recipe = artifacts.read_preprocessed(preprocessed_dir)
    label = dataset or str(preprocessed_dir)
    px_sizes = manifest["pixel_size_nm"].unique()
    if len(px_sizes) > 1 and not np.allclose(px_sizes, px_sizes[0], rtol=1e-3):
        raise UserError(f"{label}: micrographs have different pixel sizes {sorted(px_sizes)}: set "
                        f"target_pixel_size_nm (--target-pixel-size) to resample them to one")
    tiles, masks, records, full_masks = [], [], [], {}
    for rec in manifest.to_dict("records"):
        img = io.read_image(rec["image"]).data
        mask = io.read_mask(rec["mask"], img.shape)
        full_masks.setdefault(str(rec["group"]), []).append(mask)
        if min(img.shape) < patch_size_px:
            raise UserError(f"{rec['source_image']}: image of {img.shape[0]}x{img.shape[1]} px is smaller than the "
                            f"patch size {patch_size_px}: lower the patch size (--size; config: patches.size)")
        t, pos = patches.tile(img, patch_size_px)
        m, _ = patches.tile(mask.astype(np.uint8), patch_size_px)
        keep = m.reshape(len(m), -1).sum(1) > min_particle_px
        for k in np.flatnonzero(keep):
            tiles.append(t[k])
            masks.append(m[k])
            records.append({"source_image": rec["source_image"], "group": str(rec["group"]), "row_px": pos[k][0],
                            "col_px": pos[k][1], "particle_fraction": float(m[k].mean())})
    if not records:
        raise UserError(f"{label}: no patch has more than {min_particle_px} particle pixels (are the masks empty?): "
                        f"check the masks or lower --min-particle-px (config: patches.min_particle_px)")
    index = pd.DataFrame(records)
    groups = list(dict.fromkeys(index["group"]))
    counts = index.groupby("group", sort=False).size().reindex(groups).tolist()
    assign = (patches.kfold_groups(groups, folds, fold) if folds
              else patches.split_groups(groups, counts, fractions))
    index["split"] = index["group"].map(assign)
    index["index_in_split"] = index.groupby("split").cumcount()
    tiles, masks = np.stack(tiles), np.stack(masks)
    split_arrays = {}
    for split in artifacts.SPLITS:
        sel = (index["split"] == split).to_numpy()
        split_arrays[split] = (tiles[sel], masks[sel])
    px = None if np.isnan(px_sizes[0]) else float(px_sizes[0])
    # particle sizes of each split from the whole micrographs (patch borders would cut particles into slivers)
    sizes = {split: size_statistics([m for g, ms in full_masks.items() if assign.get(g) == split for m in ms], px)
             for split in artifacts.SPLITS}
    summary = {"dataset": dataset, "patch_size_px": patch_size_px, "preprocess": recipe or None,
               "pixel_size_nm": px, "min_particle_px": min_particle_px, "n_images": int(len(manifest)),
               "folds": folds or None, "fold": fold if folds else None, "particle_sizes": sizes}
    index = index[["split", "index_in_split", "source_image", "group", "row_px", "col_px", "particle_fraction"]]
    return artifacts.write_patch_folder(out_dir, split_arrays, summary, index, reads=[preprocessed_dir])
