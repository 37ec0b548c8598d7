"""Patches, leakage-free splits and the 8 dihedral augmentations.

Patches are non-overlapping squares of ``size`` px cut from preprocessed micrographs; a split assigns whole
micrographs (groups) to train/val/test so that no micrograph contributes to two sets.
"""

from __future__ import annotations

import numpy as np
import torch

from rfseg.errors import UserError

SPLITS = ("train", "val", "test")


def tile(image: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Non-overlapping ``size`` x ``size`` tiles (row-major), dropping the remainder at the right/bottom edges.

    Returns (tiles of shape (n, size, size), list of (row, col) of each tile's top-left pixel)."""
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
        raise UserError(f"folds must be between 3 and the number of micrographs ({len(groups)}), got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"fold must be between 0 and {folds - 1}, got {fold}")
    out = {}
    for i, g in enumerate(groups):
        k = i % folds
        out[g] = "test" if k == fold else "val" if k == (fold + 1) % folds else "train"
    return out


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k = 0..7) on the last two axes: rotate k % 4 quarter turns, then
    mirror left-right if k >= 4. The identity (k = 0) returns ``x`` itself, not a copy."""
    if k == 0:
        return x
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` (for test-time augmentation)."""
    if k == 0:
        return x
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


def dihedral_batch(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Apply transform ``ks[i]`` to sample ``x[i]`` for a batch (B, C, H, W) with H == W, on the tensor's device.
    ``ks`` is best kept on the host: grouping by transform there costs a GPU no synchronisation."""
    ks = ks.cpu()
    out = torch.empty_like(x)
    for k in range(8):
        sel = (ks == k).nonzero().flatten()
        if len(sel):
            out[sel] = dihedral(x[sel], k)
    return out
