"""Built-in demo datasets: simulated micrographs with exact particle masks.

``hrtem``: Au nanoparticles on amorphous carbon by abTEM multislice (lattice fringes, weak amplitude contrast).
``lowres``: ~20 nm particles with mass-thickness (amplitude) contrast at ~0.12 nm/px.
Each yields (name, image float32, labels uint16, pixel size nm/px, parameters) frames; the simulate stage writes them
through :func:`rfseg.blocks.artifacts.write_simulated`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def seeded_frames(simulate_image, prefix: str, n_images: int, seed: int, default_pixel_size_nm: float, start: int = 0,
                  workers: int = 1, **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for micrographs ``start`` to ``n_images - 1`` of
    ``simulate_image``, in order.

    Each micrograph draws from its own stream spawned from ``seed``, so no micrograph can shift the next, and
    micrograph i is the same whether or not the ones before it are made, and however many ``workers`` (processes,
    one thread each) make them."""
    px = kwargs.get("pixel_size_nm", default_pixel_size_nm)
    children = np.random.SeedSequence(seed).spawn(n_images)[start:]
    make = functools.partial(_seeded_image, simulate_image, kwargs)
    if workers > 1 and len(children) > 1:
        # spawned, not forked: the parent may hold PyTorch or numba thread pools that a fork would copy broken
        pool = ProcessPoolExecutor(min(workers, len(children)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_one_thread_per_worker)
        try:
            yield from _named(prefix, start, px, pool.map(make, children))
        finally:  # a consumer that stops early (or an error) leaves no micrograph computing
            pool.shutdown(cancel_futures=True)
    else:
        yield from _named(prefix, start, px, map(make, children))


def _seeded_image(simulate_image, kwargs, child: np.random.SeedSequence):
    return simulate_image(np.random.default_rng(child), **kwargs)


def _named(prefix, start, px, results):
    for i, (image, labels, params) in enumerate(results, start=start):
        yield f"{prefix}_{i:03d}", image, labels, px, params


def _one_thread_per_worker():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"


def poisson_noise(intensity: np.ndarray, counts_per_px: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise for a mean of ``counts_per_px`` electrons per pixel at intensity 1; returned in intensity units."""
    return (rng.poisson(np.clip(intensity, 0, None) * counts_per_px) / counts_per_px).astype(np.float32)
