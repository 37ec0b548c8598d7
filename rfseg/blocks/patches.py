"""Patches and leakage-free splits.

Patches are non-overlapping squares of ``patch_size_px`` cut from preprocessed micrographs; a split assigns whole
micrographs (groups) to train/val/test so that no micrograph contributes to two sets.
"""

from __future__ import annotations

import numpy as np

from rfseg.errors import UserError

SPLITS = ("train", "val", "test")


def tile(image: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Non-overlapping ``size`` x ``size`` tiles (row-major), dropping the remainder at the right/bottom edges.

    Parameters
    ----------
    image : (rows, cols) array
    size : int, tile edge in px

    Returns
    -------
    tiles : (n, size, size) array, a view where possible
    positions : list of (row, col) of each tile's top-left pixel
    """
    rows, cols = image.shape[0] // size, image.shape[1] // size
    tiles = image[: rows * size, : cols * size].reshape(rows, size, cols, size).swapaxes(1, 2)
    positions = [(r * size, c * size) for r in range(rows) for c in range(cols)]
    return tiles.reshape(rows * cols, size, size), positions


def split_groups(groups: list[str], patch_counts: list[int], fractions=(0.7, 0.1, 0.2)) -> dict[str, str]:
    """Assign whole groups (micrographs), kept in the given order, to train, then val, then test.

    The two cut points are chosen so that the patch shares come closest to ``fractions``, with at least one group
    in every split. Returns {group: split}."""
    n = len(groups)
    if n < 3:
        raise UserError(f"only {n} micrograph(s) with usable patches: a split by micrograph into "
                        f"train/val/test needs at least 3")
    share_before = np.concatenate([[0], np.cumsum(patch_counts)]) / sum(patch_counts)
    target_val, target_test = fractions[0], fractions[0] + fractions[1]
    first_val = min(range(1, n - 1), key=lambda i: abs(share_before[i] - target_val))
    first_test = min(range(first_val + 1, n), key=lambda i: abs(share_before[i] - target_test))
    return {g: "train" if i < first_val else "val" if i < first_test else "test" for i, g in enumerate(groups)}


def kfold_groups(groups: list[str], folds: int, fold: int) -> dict[str, str]:
    """Cross-validation over micrographs: groups go round-robin into ``folds`` folds; fold ``fold`` is the test set,
    fold ``fold + 1`` (mod folds) the validation set, the rest is training."""
    if not 3 <= folds <= len(groups):
        raise UserError(f"folds (--folds; config: split.folds) must be between 3 and the number of micrographs "
                        f"({len(groups)}), got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"fold must be between 0 and {folds - 1} (--fold < --folds; config: split.fold < "
                        f"split.folds), got {fold}")
    out = {}
    for i, g in enumerate(groups):
        k = i % folds
        out[g] = "test" if k == fold else "val" if k == (fold + 1) % folds else "train"
    return out
