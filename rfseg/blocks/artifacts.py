"""The one owner of rfseg's on-disk artifacts: what each folder holds, how it is written and read back, and where it
lives under ``results/``.

Artifacts: a simulated dataset (``images/``, ``masks/``, ``manifest.csv``), a preprocessed dataset (standardised
TIFFs, ``manifest.csv``, ``preprocess.json``), a patch folder (``<split>_images.npy`` / ``_masks.npy``,
``index.csv``, ``summary.json``), an evaluation (``metrics.csv``, ``particles.csv``, ``probabilities.tif``,
``false_negatives.tif``) and a Fourier-baseline folder; model bundles and checkpoints are owned by
:mod:`rfseg.blocks.bundle`. Stages, figures, benchmarks, tests and the workflow read and write them only through
these two modules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import io
from rfseg.errors import UserError

SPLITS = ("train", "val", "test")

# ------------------------------------------------------------------------------------------------ simulated data
SIM_MANIFEST = "manifest.csv"


def write_simulated(out_dir, frames) -> pd.DataFrame:
    """Write (name, image, labels, pixel_size_nm, params) frames as ``images/<name>.tif`` (float32, pixel size in
    the TIFF), ``masks/<name>.tif`` (uint16 labels) and ``manifest.csv``, into a folder replaced atomically."""
    rows = []
    with io.atomic_dir(out_dir) as tmp:
        for name, image, labels, px, params in frames:
            io.write_tiff(tmp / "images" / f"{name}.tif", image.astype(np.float32), px)
            io.write_tiff(tmp / "masks" / f"{name}.tif", labels.astype(np.uint16), px)
            rows.append({"image": f"images/{name}.tif", "mask": f"masks/{name}.tif", "pixel_size_nm": px,
                         "group": name, **params})
        df = pd.DataFrame(rows)
        io.write_csv(df, tmp / SIM_MANIFEST)
    return df


def simulated_manifest(folder) -> Path:
    return Path(folder) / SIM_MANIFEST


# ------------------------------------------------------------------------------------------- preprocessed data
PRE_MANIFEST, PRE_RECIPE = "manifest.csv", "preprocess.json"


def preprocessed_names(stem: str) -> tuple[str, str]:
    """File names of one preprocessed micrograph and its mask."""
    return f"{stem}.tif", f"{stem}_mask.tif"


def write_preprocessed_index(folder, manifest: pd.DataFrame, recipe: dict) -> None:
    io.write_csv(manifest, Path(folder) / PRE_MANIFEST)
    io.write_json(recipe, Path(folder) / PRE_RECIPE)


def read_preprocessed(folder) -> tuple[pd.DataFrame, dict]:
    """(manifest with absolute image/mask paths, recipe dict) of a folder written by ``rfseg preprocess``."""
    folder = Path(folder)
    if not (folder / PRE_MANIFEST).is_file():
        raise UserError(f"{folder}: not a preprocessed dataset (no {PRE_MANIFEST}): give the folder that "
                        f"'rfseg preprocess' wrote")
    manifest = io.read_manifest(folder / PRE_MANIFEST)
    recipe = io.read_json(folder / PRE_RECIPE, "preprocessing record") if (folder / PRE_RECIPE).is_file() else {}
    return manifest, recipe


# ------------------------------------------------------------------------------------------------- patch folder
PATCH_SUMMARY, PATCH_INDEX = "summary.json", "index.csv"


def patch_files(folder, split: str) -> tuple[Path, Path]:
    """(images .npy, masks .npy) of one split."""
    return Path(folder) / f"{split}_images.npy", Path(folder) / f"{split}_masks.npy"


def write_patch_folder(out_dir, splits: dict, summary: dict, index: pd.DataFrame | None = None,
                       reads=()) -> dict:
    """Write a patch folder atomically.

    Parameters
    ----------
    splits : {split: (images float32 (n, s, s), masks uint8 (n, s, s))} for train, val and test
    summary : dict, at least ``dataset``, ``patch_size_px`` and ``pixel_size_nm``; per-split counts are added
    index : DataFrame, optional, one row per patch (split, index_in_split, source_image, group, row_px, col_px, ...)

    Returns
    -------
    The summary as written to ``summary.json``.
    """
    summary = {**summary, "splits": {}}
    with io.atomic_dir(out_dir, reads=reads) as tmp:
        for split in SPLITS:
            images, masks = splits[split]
            images, masks = np.asarray(images, np.float32), np.asarray(masks, np.uint8)
            for path, array in zip(patch_files(tmp, split), (images, masks)):
                io.save_npy(path, array)
            summary["splits"][split] = {
                "patches": int(len(images)),
                "micrographs": int(index.loc[index["split"] == split, "group"].nunique()) if index is not None
                else int(len(images)),
                "particle_fraction": float(masks.mean()) if len(masks) else None}
        if index is not None:
            io.write_csv(index, tmp / PATCH_INDEX)
        io.write_json(summary, tmp / PATCH_SUMMARY)
    return summary


def read_patch_summary(folder) -> dict:
    """The ``summary.json`` of a patch folder; UserError naming the folder if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: patch folder not found: give the folder that 'rfseg patches' wrote")
    if not (folder / PATCH_SUMMARY).is_file():
        hint = " (it is a preprocessed dataset: run 'rfseg patches' on it)" if (folder / PRE_MANIFEST).is_file() else ""
        raise UserError(f"{folder}: not a patch folder, it has no {PATCH_SUMMARY}{hint}")
    return io.read_json(folder / PATCH_SUMMARY, "patch summary")


def read_patch_index(folder) -> pd.DataFrame:
    path = Path(folder) / PATCH_INDEX
    if not path.is_file():
        raise UserError(f"{path}: patch index not found: rerun 'rfseg patches'")
    return pd.read_csv(path)


def load_split(folder, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (n, s, s), masks uint8 (n, s, s)) of one split, memory-mapped by default.

    Raises UserError naming the file when it is missing, truncated or of the wrong shape."""
    arrays = []
    for path in patch_files(folder, split):
        try:
            arrays.append(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
        except FileNotFoundError:
            raise UserError(f"{path}: patch array not found: rerun 'rfseg patches' for this folder") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path}: cannot read the patch array ({e}); is it complete? rerun 'rfseg patches'"
                            ) from None
    images, masks = arrays
    if images.ndim != 3 or images.shape != masks.shape:
        raise UserError(f"{folder}: {split} images {images.shape} and masks {masks.shape} are not two matching "
                        f"(n, size, size) stacks: rerun 'rfseg patches'")
    return images, masks


# ------------------------------------------------------------------------------------------------- evaluation
def eval_files(folder) -> dict[str, Path]:
    folder = Path(folder)
    return {"metrics": folder / "metrics.csv", "particles": folder / "particles.csv",
            "probabilities": folder / "probabilities.tif", "false_negatives": folder / "false_negatives.tif"}


def write_eval(folder, row: dict, particles: pd.DataFrame, prob: np.ndarray, truth: np.ndarray,
               pixel_size_nm: float | None) -> None:
    """One model's evaluation: the metrics row, per-particle recovery, the test probabilities (n, H, W) float32 and
    the false-negative maps (truth and not predicted). The metrics row is written last: it marks completion."""
    files = eval_files(folder)
    io.write_csv(particles, files["particles"])
    io.write_tiff(files["probabilities"], prob, pixel_size_nm)
    io.write_tiff(files["false_negatives"], truth & (prob <= 0.5), pixel_size_nm)
    io.write_csv(pd.DataFrame([row]), files["metrics"])


def read_eval_row(folder) -> pd.Series:
    """The metrics row of an evaluation folder."""
    path = eval_files(folder)["metrics"]
    _require(path)
    return pd.read_csv(path).iloc[0]


def read_eval(folder) -> tuple[pd.Series, np.ndarray]:
    """(metrics row, probabilities (n, H, W)) of an evaluation folder."""
    import tifffile

    files = eval_files(folder)
    _require(files["metrics"], files["probabilities"])
    return pd.read_csv(files["metrics"]).iloc[0], tifffile.imread(files["probabilities"])


def read_false_negatives(folder) -> np.ndarray:
    import tifffile

    path = eval_files(folder)["false_negatives"]
    _require(path)
    return tifffile.imread(path).astype(bool)


# ---------------------------------------------------------------------------------------------- Fourier baseline
def fourier_files(folder) -> dict[str, Path]:
    folder = Path(folder)
    return {"metrics": folder / "metrics.csv", "masks": folder / "masks.tif",
            "false_negatives": folder / "false_negatives.tif"}


def write_fourier(folder, row: dict, pred: np.ndarray | None = None, truth: np.ndarray | None = None,
                  pixel_size_nm: float | None = None) -> None:
    """The baseline's folder, replaced atomically: ``metrics.csv`` always; ``masks.tif`` and
    ``false_negatives.tif`` when it ran (a skipped baseline has a note in its row instead)."""
    with io.atomic_dir(folder) as tmp:
        files = fourier_files(tmp)
        if pred is not None:
            io.write_tiff(files["masks"], pred, pixel_size_nm)
            io.write_tiff(files["false_negatives"], truth & ~pred, pixel_size_nm)
        io.write_csv(pd.DataFrame([row]), files["metrics"])


def read_fourier_false_negatives(folder) -> tuple[np.ndarray | None, str]:
    """(false-negative maps or None, the note saying why there are none)."""
    import tifffile

    files = fourier_files(folder)
    _require(files["metrics"])
    if files["false_negatives"].is_file():
        return tifffile.imread(files["false_negatives"]).astype(bool), ""
    note = pd.read_csv(files["metrics"])["note"].fillna("").iloc[0]
    return None, f"Fourier baseline {note}" if note else "Fourier baseline not run"


def _require(*paths) -> None:
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p}: input missing: run the stage that writes it first (snakemake makes it on the way)")


# ----------------------------------------------------------------------------------------------- results layout
class Layout:
    """Where each artifact lives under a results folder. Arguments may be Snakemake wildcards such as
    ``"{dataset}"``: the workflow builds its rules' inputs and outputs from the same methods."""

    def __init__(self, results="results"):
        import os

        self.root = os.path.normpath(str(results))

    def _p(self, *parts) -> str:
        return "/".join([*([] if self.root == "." else [self.root]), *map(str, parts)])

    def raw(self, ds):
        return self._p(ds, "raw")

    def preprocessed(self, ds):
        return self._p(ds, "preprocessed")

    def patches(self, ds):
        return self._p(ds, "patches")

    def model(self, ds, arch, seed):
        return self._p(ds, "models", arch, f"seed{seed}")

    def checkpoint(self, ds, arch, seed):
        return self._p(ds, "checkpoints", arch, f"seed{seed}.pt")

    def eval(self, ds, arch, seed):
        return self._p(ds, "eval", arch, f"seed{seed}")

    def eval_published(self, ds, name, member):
        return self._p(ds, "eval_published", name, member)

    def fourier(self, ds):
        return self._p(ds, "fourier")

    def fn_overlap(self, ds):
        return self._p(ds, "fn_overlap.csv")

    def erf(self, ds, arch, seed):
        return self._p(ds, "erf", f"{arch}_seed{seed}.tif")

    def fingerprint(self, ds):
        return self._p(ds, "fingerprint.csv")

    def paired(self, ds):
        return self._p(ds, "paired.csv")

    def per_micrograph(self, ds):
        return self._p(ds, "per_micrograph.csv")

    def figure(self, ds, name, ext="png"):
        return self._p("figures", ds, f"{name}.{ext}")

    def series_figure(self, ext="png"):
        return self._p("figures", f"series.{ext}")

    def metrics(self):
        return self._p("metrics.csv")

    def summary(self):
        return self._p("summary.csv")

    def architectures(self):
        return self._p("architectures.csv")

    def dataset_table(self):
        return self._p("tables", "datasets.csv")

    def predict_raw(self, name):
        return self._p("predict", name, "raw")

    def predict_out(self, name):
        return self._p("predict", name, "segmented")

    def log(self, stage, *parts):
        return self._p("logs", stage, *parts[:-1], f"{parts[-1]}.log") if parts else self._p("logs", f"{stage}.log")

    def benchmark(self, stage, *parts):
        return (self._p("benchmarks", stage, *parts[:-1], f"{parts[-1]}.tsv") if parts
                else self._p("benchmarks", f"{stage}.tsv"))
