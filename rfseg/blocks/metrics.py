"""Segmentation metrics over numpy arrays. Masks are bool or {0,1}; probabilities are float in [0, 1].

Shapes: ``(n, H, W)`` for per-patch metrics, any shape for pooled (global) metrics.
"""

from __future__ import annotations

import numpy as np


def dice_per_patch(pred: np.ndarray, truth: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """(2|X∩Y| + s) / (|X| + |Y| + s) for each patch (the paper's definition, smoothing 1).

    ``pred`` may be a hard mask (hard dice) or the particle probability (soft dice). Returns float64 (n,)."""
    p = pred.reshape(len(pred), -1).astype(np.float64)
    t = truth.reshape(len(truth), -1).astype(np.float64)
    return (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) pooled over all pixels."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())


def pooled_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Global (pooled-pixel) dice, IoU, precision and recall of a hard prediction. Empty-vs-empty scores 1."""
    return scores_from_counts(*confusion(pred, truth))


def scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Global dice, IoU, precision and recall from pooled pixel counts (true/false positives, false negatives)."""
    def ratio(a, b):
        return a / b if b else 1.0

    return {"global_dice": ratio(2 * tp, 2 * tp + fp + fn), "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


def calibration_error(prob: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of particle probabilities, pooled over all pixels: the pixel-weighted mean, over
    ``bins`` equal-width probability bins, of |mean probability - particle share|. 0 for a calibrated predictor (among
    pixels given p, a share p is particle); at most 1."""
    p = np.asarray(prob, np.float64).ravel()
    t = np.asarray(truth, bool).ravel()
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    gap = np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=t, minlength=bins)
    return float(np.abs(gap).sum() / max(len(p), 1))


def segmentation_scores(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every score of one method on a set of patches (n, H, W): hard and soft per-patch dice, pooled scores and the
    calibration error of the probabilities."""
    hard = prob > 0.5
    return {"hard_dice": float(dice_per_patch(hard, truth).mean()),
            "soft_dice": float(dice_per_patch(prob, truth).mean()),
            **pooled_scores(hard, truth), "calibration_error": calibration_error(prob, truth)}


def particle_recovery(pred: np.ndarray, truth: np.ndarray, pixel_size_nm: float | None) -> list[dict]:
    """Per ground-truth particle (8-connected component of one patch): equivalent diameter in px and nm (NaN when
    the pixel size is unknown), area in px, and the fraction of its pixels the prediction recovered.
    ``pred`` and ``truth`` are (n, H, W)."""
    from skimage.measure import label, regionprops

    rows = []
    for i, (p, t) in enumerate(zip(np.asarray(pred, bool), np.asarray(truth, bool))):
        for r in regionprops(label(t, connectivity=2)):
            rr, cc = r.coords[:, 0], r.coords[:, 1]
            d_px = float(np.sqrt(4 * r.area / np.pi))
            rows.append({"patch": i, "particle": r.label, "area_px": int(r.area), "diameter_px": d_px,
                         "diameter_nm": np.nan if pixel_size_nm is None else d_px * pixel_size_nm,
                         "recovered_fraction": float(p[rr, cc].mean())})
    return rows
