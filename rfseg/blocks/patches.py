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


#: share of the micrographs outside the test fold that a cross-validation fold validates on (at least one)
VAL_SHARE = 0.1


def kfold_groups(groups: list[str], folds: int, fold: int) -> dict[str, str]:
    """Cross-validation over micrographs: groups go round-robin into ``folds`` folds, and fold ``fold`` is the test
    set; of the others a validation slice of :data:`VAL_SHARE` (at least one group) is taken, the first groups of
    the next folds, and the rest trains. Over the folds every group is tested exactly once, and in no fold is a
    group in two roles. Returns {group: split}."""
    n = len(groups)
    if not 2 <= folds <= n:
        raise UserError(f"folds (--folds; config: split.folds) must be between 2 and the number of micrographs "
                        f"({n}), got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"fold must be between 0 and {folds - 1} (--fold < --folds), got {fold}")
    rest = sorted((i for i in range(n) if i % folds != fold), key=lambda i: ((i % folds - fold - 1) % folds, i))
    n_val = max(1, round(VAL_SHARE * len(rest)))
    if len(rest) - n_val < 1:
        raise UserError(f"{n} micrographs in {folds} folds leave no micrograph to train on beside the test fold and "
                        f"one to validate on: add micrographs or use more folds (--folds; config: split.folds)")
    out = {g: "train" for g in groups}
    for i in rest[:n_val]:
        out[groups[i]] = "val"
    for i in range(fold, n, folds):
        out[groups[i]] = "test"
    return out
