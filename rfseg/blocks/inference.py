"""Network inference on arrays: particle probability of patches and of whole images by sliding-window tiling.

Whole images are segmented by overlapping tiles, each weighted by a Gaussian that falls off towards the tile edges, so
that tile borders leave no seams (as in nnU-Net); optional test-time augmentation averages the 8 dihedral transforms.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from rfseg.blocks.augment import dihedral, dihedral_inverse
from rfseg.blocks.runtime import autocast_dtype, autocast_factory, inference_precision, memory_format
from rfseg.errors import UserError

#: the largest tile overlap accepted (as a fraction of the tile); the config schema states the same bound
MAX_OVERLAP = 0.9
#: the default tile overlap of whole-micrograph inference (README, Performance: smaller overlaps cost large-RF
#: networks dice)
DEFAULT_OVERLAP = 0.5


def gaussian_weight(tile: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """(tile, tile) float32 importance map: a Gaussian of std tile*sigma_scale, max 1, floored to keep it > 0."""
    c = (tile - 1) / 2
    g = np.exp(-0.5 * ((np.arange(tile) - c) / (tile * sigma_scale)) ** 2)
    w = np.outer(g, g)
    w /= w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles covering [0, length) with the given step; the last tile ends at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def tile_boxes(shape, tile: int, overlap: float, multiple: int = 1):
    """The padded size (rows, cols) of an image of ``shape`` (at least one tile, a multiple of ``multiple``) and
    the (row, col) starts of the tiles that :func:`sliding_window_probability` computes on it."""
    th, tw = (max(tile, math.ceil(n / multiple) * multiple) for n in shape)
    step = max(1, int(round(tile * (1 - overlap))))
    return (th, tw), [(y, x) for y in tile_starts(th, tile, step) for x in tile_starts(tw, tile, step)]


def particle_probability(model, x: torch.Tensor, tta: bool = False, amp=None,
                         memfmt=torch.contiguous_format) -> torch.Tensor:
    """Particle probability (B, H, W) float32 of a batch (B, 1, H, W); with ``tta`` the mean over the 8 dihedral
    transforms. ``amp`` is an autocast factory (:func:`rfseg.blocks.runtime.autocast_factory`); None runs in
    float32."""
    transforms = range(8) if tta else [0]
    p = 0
    for t in transforms:
        with amp() if amp else contextlib.nullcontext():
            logits = model(dihedral(x, t).contiguous(memory_format=memfmt))
        p = p + dihedral_inverse(class_probability(logits, 1), t)
    return p / len(transforms)


def class_probability(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax probability (B, H, W) float32 of class ``k`` from logits (B, classes, H, W). With two classes it is
    the sigmoid of the logit difference: the same number, a third of the time of a softmax over channels-last
    logits."""
    if logits.shape[1] == 2:
        return torch.sigmoid(logits[:, k].float() - logits[:, 1 - k].float())
    return torch.softmax(logits.float(), 1)[:, k]


class FrozenCompiled(torch.nn.Module):
    """An eval-mode network compiled by ``torch.compile`` with Inductor's *freezing* for inference: the weights
    become constants, so batch norm folds into the convolutions and oneDNN pre-packs their weights (2.4x the eager
    speed in bf16 on a 2-core CPU, README). The weights must not change afterwards; use it under ``torch.no_grad``.
    Compilation happens on the first call of each input shape."""

    def __init__(self, model):
        super().__init__()
        self.spec = model.spec
        self._compiled = torch.compile(model, dynamic=False)

    def forward(self, x):
        import torch._inductor.config

        # a config patch, not a global switch: freezing suits inference only, never a model still being trained
        with torch._inductor.config.patch(freezing=True):
            return self._compiled(x)


def compiled(model) -> FrozenCompiled:
    """The inference-compiled form of an eval-mode model (see :class:`FrozenCompiled`)."""
    return FrozenCompiled(model.eval())


@torch.no_grad()
def sliding_window_probability(model, image: np.ndarray, tile: int, overlap: float = DEFAULT_OVERLAP,
                               batch_size: int = 8, device="cpu", tta: bool = False,
                               precision: str = "fp32") -> np.ndarray:
    """Particle probability (H, W) float32 of one preprocessed image (H, W) float32.

    The image is reflect-padded to at least one tile and to a multiple of the model's downsampling; tiles of
    ``tile`` px step by ``tile * (1 - overlap)``; predictions are blended with :func:`gaussian_weight`. Memory is two
    float32 image-sized accumulators plus one batch of tiles. ``precision`` "auto" runs the network in bfloat16
    (channels-last) on a CPU that supports it and in float32 on a GPU (:func:`inference_precision`); "fp32" is the
    reference."""
    device = torch.device(device)
    precision = inference_precision(precision, device)
    amp = autocast_factory(device, autocast_dtype(precision, device))
    memfmt = memory_format(precision)
    model = model.to(memory_format=memfmt)
    k = model.spec.downsampling
    if tile < k or tile % k:
        raise UserError(f"tile size {tile} px (--tile) is not a positive multiple of {k} (the product of the pools "
                        f"of {model.spec.name})")
    if not 0 <= overlap <= MAX_OVERLAP:
        raise UserError(f"overlap (--overlap) must be between 0 and {MAX_OVERLAP}, got {overlap}")
    if batch_size < 1:
        raise UserError(f"batch size (--batch-size) must be at least 1, got {batch_size}")
    h, w = image.shape
    (th, tw), boxes = tile_boxes(image.shape, tile, overlap, k)
    padded = np.pad(image, ((0, th - h), (0, tw - w)), mode="reflect" if min(h, w) > 1 else "edge")
    # tiles are cut and blended where the network runs: one transfer of the image each way, not one per tile
    padded = torch.from_numpy(padded.astype(np.float32, copy=False)).to(device)
    weight = torch.from_numpy(gaussian_weight(tile)).to(device)
    acc = torch.zeros((th, tw), dtype=torch.float32, device=device)
    norm = torch.zeros((th, tw), dtype=torch.float32, device=device)
    # a compiled model compiles once per batch shape: a short last batch is filled up rather than compiled again
    fill = isinstance(model, FrozenCompiled) and len(boxes) > batch_size
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        x = torch.stack([padded[y:y + tile, x0:x0 + tile] for y, x0 in chunk])[:, None]
        if fill and len(chunk) < batch_size:
            x = torch.cat([x, x[:1].expand(batch_size - len(chunk), -1, -1, -1)])
        p = particle_probability(model, x, tta, amp, memfmt).float()[:len(chunk)]
        for (y, x0), pt in zip(chunk, p):
            acc[y:y + tile, x0:x0 + tile] += pt * weight
            norm[y:y + tile, x0:x0 + tile] += weight
    return (acc / norm)[:h, :w].cpu().numpy()


@torch.no_grad()
def predict_patches(model, images: np.ndarray, batch_size: int = 16, device="cpu", tta: bool = False) -> np.ndarray:
    """Particle probability (n, H, W) float32 for patches (n, H, W) float32; with ``tta`` the mean over the 8
    dihedral transforms."""
    out = np.empty(images.shape, np.float32)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size]))[:, None].to(device)
        out[i:i + batch_size] = particle_probability(model, x, tta).cpu().numpy()
    return out
