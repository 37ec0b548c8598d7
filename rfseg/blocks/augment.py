"""The 8 dihedral augmentations on tensors, and the seeded plan of one training epoch."""

from __future__ import annotations

import torch

from rfseg.errors import check_choice

AUGMENTS = ("all8", "random8")


def epoch_plan(seed: int, epoch: int, n: int, augment: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch indices, dihedral transform ids) of one epoch, both int64 on the CPU, from (seed, epoch) only.

    "all8": every patch in all 8 forms, shuffled (8n entries, the paper); "random8": every patch once in a random
    form (n entries). Every architecture trained with one seed therefore sees the same batches."""
    check_choice("training.augment (--augment)", augment, AUGMENTS)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if augment == "all8":
        order = torch.randperm(8 * n, generator=g)
        return order % n, order // n
    return torch.randperm(n, generator=g), torch.randint(0, 8, (n,), generator=g)


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
