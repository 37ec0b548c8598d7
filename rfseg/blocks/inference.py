"""Network inference on arrays: particle probability of patches and of whole images by sliding-window tiling.

Whole images are segmented by overlapping tiles in one of two ways. ``tile="auto"`` (the default) fits tiles of at
most :data:`AUTO_TILE_PX` to the image, overlapping by the network's whole context and cut at the middle of each
overlap, so the result equals inference on the whole image at once (seamless by construction, and cheap: little
overlap). A fixed tile size blends tiles that overlap by a fraction of the tile, each weighted by a Gaussian that falls
off towards the tile edges (as in nnU-Net). Optional test-time augmentation averages the 8 dihedral transforms.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from rfseg.blocks.augment import dihedral, dihedral_inverse
from rfseg.blocks.models import ArchSpec, ResidualUNet, receptive_field
from rfseg.blocks.runtime import autocast_dtype, autocast_factory, inference_precision, memory_format
from rfseg.errors import UserError

#: the tile setting that fits tiles to the image and stitches them exactly (see the module's description)
AUTO_TILE = "auto"
#: the largest tile overlap accepted (as a fraction of the tile); the config schema states the same bound
MAX_OVERLAP = 0.9
#: the default tile overlap of fixed-size tiles (docs/explanation/performance.md: smaller overlaps cost large-RF
#: networks dice)
DEFAULT_OVERLAP = 0.5
#: the largest tile side of ``tile="auto"``: larger tiles waste less on their overlap but run slower per pixel on a
#: CPU (caches) and hold more memory (about 0.5 GB for a 1024 px tile of the demo's networks;
#: docs/explanation/performance.md)
AUTO_TILE_PX = 1024


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


@functools.lru_cache(maxsize=None)
def context_px(spec: ArchSpec) -> int:
    """Input pixels on each side of an output pixel that it can depend on: half the receptive field, rounded up to a
    multiple of the downsampling (so that tiles on the pooling grid that overlap by twice this and are cut at the
    middle of their overlap give the whole-image result; tested on every demo architecture and a published one)."""
    k = spec.downsampling
    return math.ceil(math.ceil(receptive_field(ResidualUNet(spec)) / 2) / k) * k


def fitted_tiles(length: int, max_tile: int, context: int, multiple: int) -> tuple[int, list[int], list[int]]:
    """Tiles along one axis of ``length`` px (a multiple of ``multiple``) for exact stitching.

    Returns the tile size, the tile starts (multiples of ``multiple``) and the cuts: tile ``i`` supplies the pixels
    from ``cuts[i]`` to ``cuts[i + 1]``. As few tiles of at most ``max_tile`` px as cover the axis while neighbours
    overlap by at least ``2 * context`` px, all of one size, evenly spread; every cut lies at least ``context`` px
    inside both tiles it separates.
    """
    if length <= max_tile:
        return length, [0], [0, length]
    overlap = 2 * context
    max_tile = max(max_tile // multiple * multiple, overlap + 2 * multiple)  # a tile must reach past its overlap
    n = math.ceil((length - overlap) / (max_tile - overlap))
    tile = min(length, math.ceil((length + (n - 1) * overlap) / n / multiple) * multiple)
    room = (length - tile) // multiple
    starts = [i * room // (n - 1) * multiple for i in range(n)]
    cuts = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(n - 1)] + [length]
    return tile, starts, cuts


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go: the padded image size ``(rows, cols)``, the tile size ``(rows, cols)``,
    the tiles' ``(row, col)`` starts, and for exact stitching (``tile="auto"``) the part of each tile it supplies as
    ``(row0, row1, col0, col1)`` in tile coordinates (None: Gaussian blending)."""

    padded: tuple[int, int]
    tile: tuple[int, int]
    starts: list[tuple[int, int]]
    keep: list[tuple[int, int, int, int]] | None

    @property
    def tile_px(self) -> int:
        """Pixels the network computes on: all tiles together."""
        return len(self.starts) * self.tile[0] * self.tile[1]


def tile_plan(shape, tile: int | str, overlap: float, spec: ArchSpec) -> TilePlan:
    """The :class:`TilePlan` of :func:`sliding_window_probability` for an image of ``shape`` (rows, cols).

    The image is padded to a multiple of the downsampling; with a fixed ``tile`` also to at least one tile, and tiles
    step by ``tile * (1 - overlap)``. ``tile="auto"``: :func:`fitted_tiles` of at most :data:`AUTO_TILE_PX` per axis.
    """
    k = spec.downsampling
    if tile == AUTO_TILE:
        padded = tuple(math.ceil(n / k) * k for n in shape)
        (th, ys, ycuts), (tw, xs, xcuts) = (fitted_tiles(n, AUTO_TILE_PX, context_px(spec), k) for n in padded)
        starts, keep = [], []
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                starts.append((y, x))
                keep.append((ycuts[i] - y, ycuts[i + 1] - y, xcuts[j] - x, xcuts[j + 1] - x))
        return TilePlan(padded, (th, tw), starts, keep)
    th, tw = (max(tile, math.ceil(n / k) * k) for n in shape)
    step = max(1, int(round(tile * (1 - overlap))))
    return TilePlan((th, tw), (tile, tile), [(y, x) for y in tile_starts(th, tile, step)
                                             for x in tile_starts(tw, tile, step)], None)


def check_tiling(tile, overlap: float, batch_size: int, spec: ArchSpec) -> None:
    """A UserError naming the option for tiling settings that cannot work with ``spec``."""
    k = spec.downsampling
    if tile != AUTO_TILE and (isinstance(tile, str) or tile < k or tile % k):
        raise UserError(f"tile size {tile} px (--tile) is not a positive multiple of {k} (the product of the pools "
                        f"of {spec.name}) nor {AUTO_TILE!r}")
    if not 0 <= overlap <= MAX_OVERLAP:
        raise UserError(f"overlap (--overlap) must be between 0 and {MAX_OVERLAP}, got {overlap}")
    if batch_size < 1:
        raise UserError(f"batch size (--batch-size) must be at least 1, got {batch_size}")


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
    speed in bf16 on a 2-core CPU, docs/explanation/performance.md). The weights must not change afterwards; use it
    under ``torch.no_grad``. Compilation happens on the first call of each input shape."""

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
def sliding_window_probability(model, image: np.ndarray, tile: int | str = AUTO_TILE,
                               overlap: float = DEFAULT_OVERLAP, batch_size: int = 8, device="cpu",
                               tta: bool = False, precision: str = "fp32") -> np.ndarray:
    """Particle probability (H, W) float32 of one preprocessed image (H, W) float32.

    The image is reflect-padded to a multiple of the model's downsampling (and to at least one fixed tile).
    ``tile="auto"``: tiles fitted to the image (:func:`tile_plan`) and cut at the middle of their overlaps, which
    equals one pass over the whole image; a ``tile`` in px: tiles stepping by ``tile * (1 - overlap)``, blended with
    :func:`gaussian_weight`, ``batch_size`` at a time (auto tiles: as many as fit in ``batch_size`` tiles of 256 px,
    at least one). Memory is two float32 image-sized accumulators plus one batch of tiles. ``precision`` "auto" runs
    the network in bfloat16 (channels-last) on a CPU that supports it and in float32 on a GPU
    (:func:`inference_precision`); "fp32" is the reference.
    """
    device = torch.device(device)
    precision = inference_precision(precision, device)
    amp = autocast_factory(device, autocast_dtype(precision, device))
    memfmt = memory_format(precision)
    model = model.to(memory_format=memfmt)
    check_tiling(tile, overlap, batch_size, model.spec)
    h, w = image.shape
    plan = tile_plan(image.shape, tile, overlap, model.spec)
    (ph, pw), (th, tw) = plan.padded, plan.tile
    if plan.keep is not None:
        batch_size = max(1, batch_size * 256 ** 2 // (th * tw))
    padded = np.pad(image, ((0, ph - h), (0, pw - w)), mode="reflect" if min(h, w) > 1 else "edge")
    # tiles are cut and blended where the network runs: one transfer of the image each way, not one per tile
    padded = torch.from_numpy(padded.astype(np.float32, copy=False)).to(device)
    acc = torch.zeros((ph, pw), dtype=torch.float32, device=device)
    if plan.keep is None:
        weight = torch.from_numpy(gaussian_weight(th)).to(device)
        norm = torch.zeros((ph, pw), dtype=torch.float32, device=device)
    # a compiled model compiles once per batch shape: a short last batch is filled up rather than compiled again
    fill = isinstance(model, FrozenCompiled) and len(plan.starts) > batch_size
    for i in range(0, len(plan.starts), batch_size):
        chunk = plan.starts[i:i + batch_size]
        x = torch.stack([padded[y:y + th, x0:x0 + tw] for y, x0 in chunk])[:, None]
        if fill and len(chunk) < batch_size:
            x = torch.cat([x, x[:1].expand(batch_size - len(chunk), -1, -1, -1)])
        p = particle_probability(model, x, tta, amp, memfmt).float()[:len(chunk)]
        for n, ((y, x0), pt) in enumerate(zip(chunk, p)):
            if plan.keep is None:
                acc[y:y + th, x0:x0 + tw] += pt * weight
                norm[y:y + th, x0:x0 + tw] += weight
            else:
                y0, y1, c0, c1 = plan.keep[i + n]
                acc[y + y0:y + y1, x0 + c0:x0 + c1] = pt[y0:y1, c0:c1]
    out = acc if plan.keep is not None else acc / norm
    return out[:h, :w].cpu().numpy()


@torch.no_grad()
def predict_patches(model, images: np.ndarray, batch_size: int = 16, device="cpu", tta: bool = False) -> np.ndarray:
    """Particle probability (n, H, W) float32 for patches (n, H, W) float32; with ``tta`` the mean over the 8
    dihedral transforms."""
    out = np.empty(images.shape, np.float32)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size]))[:, None].to(device)
        out[i:i + batch_size] = particle_probability(model, x, tta).cpu().numpy()
    return out
