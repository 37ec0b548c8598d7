"""Stage: one model on a dataset's test split -> a tidy metrics row, per-particle recovery, probability and
false-negative maps (``rfseg evaluate``).

A bundle trained on the dataset runs on its test patches directly. A published bundle (``rfseg import``) expects its
own preprocessing and pixel size: it segments each test micrograph from its source file with its recipe (the
:class:`~rfseg.blocks.predictor.Predictor` path of ``rfseg predict``), and the same test patches are cut from its
probability, so both are scored on exactly the same pixels. ``published_flat_field="none"`` drops the bundle's own
flat field: for test micrographs that are windows of larger micrographs already flat-fielded as a whole (simulated
fields standing for patches of the lab's 4096² px micrographs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg.blocks import artifacts, bundle, io, metrics
from rfseg.blocks.inference import predict_patches
from rfseg.blocks.models import table_columns
from rfseg.blocks.particles import label_particles, particle_filter
from rfseg.blocks.predictor import Predictor
from rfseg.blocks.runtime import pick_device, set_threads
from rfseg.errors import UserError, check_choice


#: how a published network flat-fields the micrographs it judges: with its own recipe ("bundle"), or not at all
#: ("none": the micrographs are windows of larger ones, flat-fielded as a whole)
PUBLISHED_FLAT_FIELDS = ("bundle", "none")


def _px_text(px) -> str:
    return "an unknown pixel size" if px is None else f"{px:.5g} nm/px"


def _from_micrographs(model_dir, patch_dir, preprocessed, size, *, device, tta, batch_size,
                      flat_field: str = "bundle") -> np.ndarray:
    """Test-patch probabilities (n, size, size) of a bundle run on the test micrographs' source files;
    ``flat_field`` is one of :data:`PUBLISHED_FLAT_FIELDS`."""
    if preprocessed is None:
        raise UserError(f"{model_dir} is a published network with its own preprocessing: give the dataset's "
                        f"preprocessed folder (--preprocessed) so that it can read the source micrographs")
    manifest, _ = artifacts.read_preprocessed(preprocessed)
    manifest = manifest.set_index("source_image")
    index = artifacts.read_patch_index(patch_dir)
    test = index[index["split"] == "test"]
    # predict's tiling (the whole-micrograph result), and eager: a score must not depend on how many micrographs the
    # test split has (compile="auto" would switch on with large splits)
    predictor = Predictor([model_dir], device=device, tta=tta, batch_size=batch_size, compile="off",
                          flat_field=None if flat_field == "bundle" else flat_field)
    out = np.zeros((len(test), size, size), np.float32)
    for source, rows in test.groupby("source_image", sort=False):
        rec = manifest.loc[source]
        own = rec.get("source_pixel_size_nm")
        img = io.read_image(source, None if io.is_missing(own) else float(own))
        try:
            prob, _, _ = predictor.micrograph(img.data, img.pixel_size_yx_nm, where=source)
        except UserError as e:  # the fix predict gives names its options; here the dataset's config is the lever
            raise UserError(f"{model_dir} on {e.problem}", fix="check the dataset's pixel size (config: "
                            "pixel_size_nm) or leave this network out of its published list") from None
        shape = (int(rec["rows"]), int(rec["cols"]))
        if prob.shape != shape:  # the dataset resampled its micrographs: the patches are on that grid
            from skimage.transform import resize

            prob = resize(prob, shape, order=1, preserve_range=True).astype(np.float32)
        for r in rows.itertuples():
            out[r.index_in_split] = prob[r.row_px:r.row_px + size, r.col_px:r.col_px + size]
    return out


def run_status(prob: np.ndarray, history=None) -> str:
    """"ok", or "flagged: ..." naming why a run cannot be compared: it predicts no particle pixel or every pixel on
    the test patches, or (``history``: its history.csv) its training loss never fell below the first epoch's."""
    import pandas as pd

    reasons = []
    predicted = int((prob > 0.5).sum())
    if predicted == 0:
        reasons.append("no particle predicted")
    elif predicted == prob.size:
        reasons.append("every pixel predicted particle")
    if history is not None and history.is_file():
        loss = pd.read_csv(history)["train_loss"]
        if len(loss) > 1 and not loss.iloc[1:].min() < loss.iloc[0]:
            reasons.append("training loss did not fall")
    return "ok" if not reasons else "flagged: " + "; ".join(reasons)


def evaluate(model_dir, patch_dir, out_dir, dataset: str, *, preprocessed=None, tta: bool = False,
             device: str = "auto", threads: int = 1, batch_size: int = 16, pixel_tolerance: float = 0.01,
             published_flat_field: str = "bundle") -> dict:
    """Evaluate one model bundle on the test patches of ``patch_dir``.

    Writes ``metrics.csv`` (one row), ``particles.csv``, ``probabilities.tif`` and ``false_negatives.tif`` into
    ``out_dir``; returns the metrics row. A trained bundle must come from data at the patches' pixel size; a
    published one (method "published") needs ``preprocessed``, the dataset's preprocessed folder, and flat-fields
    the micrographs as ``published_flat_field`` says (one of :data:`PUBLISHED_FLAT_FIELDS`)."""
    check_choice("published_flat_field", published_flat_field, PUBLISHED_FLAT_FIELDS)
    set_threads(threads)
    dev = pick_device(device)
    meta = bundle.read_bundle_meta(model_dir)
    summary = artifacts.read_patch_summary(patch_dir)
    px = summary["pixel_size_nm"]
    images, masks = artifacts.load_split(patch_dir, "test")
    if len(images) == 0 or masks.sum() == 0:
        raise UserError(f"{patch_dir}: the test split has no particle pixels: add micrographs or change the split")
    published = meta.get("source") == "published"
    if published:
        prob = _from_micrographs(model_dir, patch_dir, preprocessed, images.shape[-1], device=device, tta=tta,
                                 batch_size=batch_size, flat_field=published_flat_field)
    else:
        if (meta["pixel_size_nm"] is None) != (px is None) or (
                px is not None and abs(meta["pixel_size_nm"] - px) > pixel_tolerance * px):
            raise UserError(f"{model_dir}: the model was trained at {_px_text(meta['pixel_size_nm'])} but "
                            f"{patch_dir} is at {_px_text(px)}: resample the data (rfseg preprocess "
                            f"--target-pixel-size; config: preprocess.target_pixel_size_nm) or use a "
                            f"matching model")
        if images.shape[-1] % (k := int(np.prod(meta["arch"]["pools"]))):
            raise UserError(f"{patch_dir}: patches of {images.shape[-1]} px do not fit {meta['name']} (multiple of "
                            f"{k})")
        model, _ = bundle.load_bundle(model_dir, dev)
        prob = predict_patches(model, images, batch_size, dev, tta)
    truth = masks.astype(bool)
    if not np.isfinite(prob).all():
        raise UserError(f"{model_dir}: its output holds NaN or infinite values: the model is broken (a diverged "
                        f"training?); retrain it")
    rf_px_size = meta["pixel_size_nm"] if published else px  # a published network sees the specimen at its own
    row = {"dataset": dataset, "method": "published" if published else "unet",
           "arch": meta.get("model_name", meta["name"]) if published else meta["name"],
           **table_columns(meta["arch"]), "params": meta["params"], "rf_px": meta["rf_px"],
           "rf_nm": np.nan if rf_px_size is None else meta["rf_px"] * rf_px_size,
           "pixel_size_nm": np.nan if px is None else px, "seed": meta["seed"], "tta": tta,
           "fold": np.nan if summary.get("fold") is None else summary["fold"],
           "n_test_patches": len(images), **metrics.segmentation_scores(prob, truth),
           **dict(zip(("tp_px", "fp_px", "fn_px"), metrics.confusion(prob > 0.5, truth))),
           "status": run_status(prob, None if published else bundle.bundle_files(model_dir)["history"])}
    if published:
        row["member"] = meta.get("member", "")
    # per-particle analysis on particles as predict reports them (holes filled, specks dropped by the same rule)
    rule = particle_filter(meta, px)
    labels = np.stack([rule.apply(p > 0.5)[0] for p in prob])
    true_labels = [label_particles(t) for t in truth]
    row.update({"n_particles_true": int(sum(t.max() for t in true_labels)),
                "n_particles_pred": int(sum(p.max() for p in labels)), "particle_filter": rule.rule})
    particles = pd.DataFrame(metrics.particle_recovery(labels > 0, truth, px))
    particles.insert(0, "seed", meta["seed"])
    particles.insert(0, "arch", row["arch"])
    particles.insert(0, "dataset", dataset)
    artifacts.write_eval(out_dir, row, particles, prob, truth, px)
    return row
