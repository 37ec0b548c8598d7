"""Dataset stages: a manifest of micrographs -> preprocessed TIFFs -> patches split by micrograph.

A manifest is a CSV with columns ``image``, ``mask`` and optionally ``pixel_size_nm`` (overrides the file) and
``group`` (micrographs of one group always land in the same split; default: one group per image). Relative paths are
relative to the manifest's folder.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from rfseg import io, patches, preprocess
from rfseg.errors import UserError


def manifest_from_glob(images: str, masks: str) -> pd.DataFrame:
    """Pair images matched by a glob with masks named by a pattern using ``{stem}`` (the image name without suffix)."""
    paths = sorted(glob.glob(images))
    if not paths:
        raise UserError(f"images: the pattern {images!r} matches no file: check the path")
    if "{stem}" not in masks:
        raise UserError(f"masks: the pattern {masks!r} must contain {{stem}}, e.g. masks/{{stem}}.tif")
    return pd.DataFrame({"image": paths, "mask": [masks.format(stem=Path(p).stem) for p in paths]})


def read_manifest(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found: check the manifest path in the config")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise UserError(f"{path}: cannot read the manifest as CSV ({e})") from None
    missing = {"image", "mask"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: manifest lacks column(s) {sorted(missing)}: it needs image and mask columns")
    if df.empty:
        raise UserError(f"{path}: the manifest lists no images")
    base = path.parent
    for col in ("image", "mask"):
        df[col] = [str(p if Path(p).is_absolute() else base / p) for p in df[col]]
    return df


def preprocess_dataset(manifest: pd.DataFrame, out_dir, *, pixel_size_nm=None, xray_threshold=None, xray_passes=2,
                       flat_field_sigma_nm=None, target_pixel_size_nm=None, uncalibrated=False) -> pd.DataFrame:
    """Preprocess every micrograph of a manifest into ``out_dir`` (written to a temporary folder, then renamed).

    Writes ``<stem>.tif`` (float32, standardised, pixel size in the TIFF), ``<stem>_mask.tif`` (uint8 0/1) and
    ``manifest.csv`` with columns image, mask, pixel_size_nm, group, source_image, rows, cols, particle_fraction.

    ``uncalibrated=True`` accepts micrographs without a pixel size: lengths then stay in px and every nm quantity
    downstream is left empty (NaN), never guessed."""
    rows = []
    reads = list(manifest["image"]) + list(manifest["mask"])
    with io.atomic_dir(out_dir, reads=reads) as tmp:
        stems = set()
        for rec in manifest.to_dict("records"):
            override = rec.get("pixel_size_nm", pixel_size_nm)
            if override is None or (isinstance(override, float) and math.isnan(override)):
                override = pixel_size_nm
            img = io.read_image(rec["image"], override)
            if img.pixel_size_nm is None and not uncalibrated:
                raise UserError(f"{img.path}: the file has no pixel size: {io.MISSING_PIXEL_SIZE_FIX}")
            if uncalibrated:
                img.pixel_size_nm = None
            mask = io.read_mask(rec["mask"], img.data.shape)
            data, mask, px = preprocess.preprocess(
                img.data, mask, img.pixel_size_nm, xray_threshold=xray_threshold, xray_passes=xray_passes,
                flat_field_sigma_nm=flat_field_sigma_nm, target_pixel_size_nm=target_pixel_size_nm)
            stem = Path(rec["image"]).stem
            if stem in stems:
                raise UserError(f"{rec['image']}: two images share the name {stem!r}: rename one")
            stems.add(stem)
            io.write_tiff(tmp / f"{stem}.tif", data, px)
            io.write_tiff(tmp / f"{stem}_mask.tif", mask, px)
            group = rec.get("group")
            rows.append({
                "image": f"{stem}.tif", "mask": f"{stem}_mask.tif", "pixel_size_nm": px,
                "group": stem if group is None or (isinstance(group, float) and math.isnan(group)) else str(group),
                "source_image": rec["image"], "rows": data.shape[0], "cols": data.shape[1],
                "particle_fraction": float(mask.mean()),
            })
        df = pd.DataFrame(rows)
        io.write_csv(df, tmp / "manifest.csv")
        io.write_json({"xray_threshold": xray_threshold, "xray_passes": xray_passes,
                       "flat_field_sigma_nm": flat_field_sigma_nm, "target_pixel_size_nm": target_pixel_size_nm},
                      tmp / "preprocess.json")
    return df


def make_patches(preprocessed_dir, out_dir, *, size: int, min_particle_px: int, fractions=(0.7, 0.1, 0.2),
                 folds: int | None = None, fold: int = 0, dataset: str = "") -> dict:
    """Cut preprocessed micrographs into patches, drop near-background ones, split by group, save per split.

    Writes ``<split>_images.npy`` (float32, (n, size, size)), ``<split>_masks.npy`` (uint8), ``index.csv`` (one row
    per patch: split, position in its split's arrays, source image, group, row/col in px, particle fraction) and
    ``summary.json`` (counts, pixel size)."""
    pre = Path(preprocessed_dir)
    manifest = read_manifest(pre / "manifest.csv")
    label = dataset or str(pre)
    px_sizes = manifest["pixel_size_nm"].unique()
    if len(px_sizes) > 1 and not np.allclose(px_sizes, px_sizes[0], rtol=1e-3):
        raise UserError(f"{label}: micrographs have different pixel sizes {sorted(px_sizes)}: set "
                        f"target_pixel_size_nm to resample them to one")
    tiles, masks, records = [], [], []
    for rec in manifest.to_dict("records"):
        img = io.read_image(rec["image"]).data
        mask = io.read_mask(rec["mask"], img.shape)
        if min(img.shape) < size:
            raise UserError(f"{rec['source_image']}: image of {img.shape[0]}x{img.shape[1]} px is smaller than the "
                            f"patch size {size}: lower patches.size")
        t, pos = patches.tile(img, size)
        m, _ = patches.tile(mask.astype(np.uint8), size)
        keep = m.reshape(len(m), -1).sum(1) > min_particle_px
        for k in np.flatnonzero(keep):
            tiles.append(t[k])
            masks.append(m[k])
            records.append({"source_image": rec["source_image"], "group": str(rec["group"]), "row_px": pos[k][0],
                            "col_px": pos[k][1], "particle_fraction": float(m[k].mean())})
    if not records:
        raise UserError(f"{label}: no patch has more than {min_particle_px} particle pixels (are the masks empty?): "
                        f"check the masks or lower patches.min_particle_px")
    index = pd.DataFrame(records)
    groups = list(dict.fromkeys(index["group"]))
    counts = index.groupby("group", sort=False).size().reindex(groups).tolist()
    assign = (patches.kfold_groups(groups, folds, fold) if folds
              else patches.split_groups(groups, counts, fractions))
    index["split"] = index["group"].map(assign)
    index["index_in_split"] = index.groupby("split").cumcount()
    out = Path(out_dir)
    tiles, masks = np.stack(tiles), np.stack(masks)
    settings = pre / "preprocess.json"
    summary = {"dataset": dataset, "patch_size_px": size,
               "preprocess": json.loads(settings.read_text()) if settings.is_file() else None,
               "pixel_size_nm": None if np.isnan(px_sizes[0]) else float(px_sizes[0]),
               "min_particle_px": min_particle_px, "n_images": int(len(manifest)), "splits": {}}
    for split in patches.SPLITS:
        sel = (index["split"] == split).to_numpy()
        io.save_npy(out / f"{split}_images.npy", tiles[sel])
        io.save_npy(out / f"{split}_masks.npy", masks[sel])
        summary["splits"][split] = {
            "patches": int(sel.sum()), "micrographs": int(index.loc[sel, "group"].nunique()),
            "particle_fraction": float(masks[sel].mean()) if sel.any() else None}
    io.write_csv(index[["split", "index_in_split", "source_image", "group", "row_px", "col_px",
                        "particle_fraction"]], out / "index.csv")
    io.write_json(summary, out / "summary.json")
    return summary


def load_split(patch_dir, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (n, s, s), masks uint8 (n, s, s)) of one split, memory-mapped by default."""
    d = Path(patch_dir)
    mode = "r" if mmap else None
    return np.load(d / f"{split}_images.npy", mmap_mode=mode), np.load(d / f"{split}_masks.npy", mmap_mode=mode)


def load_summary(patch_dir) -> dict:
    return json.loads((Path(patch_dir) / "summary.json").read_text())
