"""Built-in demo datasets: simulated micrographs with exact particle masks.

``hrtem``: Au nanoparticles on amorphous carbon by abTEM multislice (lattice fringes, weak amplitude contrast).
``lowres``: ~20 nm particles with mass-thickness (amplitude) contrast at ~0.12 nm/px.
Both write ``images/<name>.tif`` (float32 intensity, pixel size in the TIFF), ``masks/<name>.tif`` (uint16 particle
labels) and ``manifest.csv`` (image, mask, pixel_size_nm, group and the per-image simulation parameters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfseg import io


def write_dataset(out_dir, frames) -> pd.DataFrame:
    """Write (name, image, labels, pixel_size_nm, params) frames into ``out_dir`` atomically (temp dir, rename)."""
    rows = []
    with io.atomic_dir(out_dir) as tmp:
        for name, image, labels, px, params in frames:
            io.write_tiff(tmp / "images" / f"{name}.tif", image.astype(np.float32), px)
            io.write_tiff(tmp / "masks" / f"{name}.tif", labels.astype(np.uint16), px)
            rows.append({"image": f"images/{name}.tif", "mask": f"masks/{name}.tif", "pixel_size_nm": px,
                         "group": name, **params})
        df = pd.DataFrame(rows)
        io.write_csv(df, tmp / "manifest.csv")
    return df


def seeded_frames(simulate_image, prefix: str, n_images: int, seed: int, default_pixel_size_nm: float, **kwargs):
    """Yield (name, image, labels, pixel_size_nm, params) for ``n_images`` micrographs of ``simulate_image``.

    Each micrograph draws from its own stream spawned from ``seed``, so no micrograph can shift the next."""
    px = kwargs.get("pixel_size_nm", default_pixel_size_nm)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        image, labels, params = simulate_image(np.random.default_rng(child), **kwargs)
        yield f"{prefix}_{i:03d}", image, labels, px, params


def poisson_noise(intensity: np.ndarray, counts_per_px: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise for a mean of ``counts_per_px`` electrons per pixel at intensity 1; returned in intensity units."""
    return (rng.poisson(np.clip(intensity, 0, None) * counts_per_px) / counts_per_px).astype(np.float32)
