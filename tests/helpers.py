"""Small synthetic datasets for fast tests."""

import json
from pathlib import Path

import numpy as np


def make_patch_dir(root, n=(24, 8, 8), size=48, pixel_size_nm=0.1, seed=0):
    """A patch folder like 'rfseg patches' writes: dark noisy background with one brighter disk per patch."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    summary = {"dataset": "toy", "patch_size_px": size, "pixel_size_nm": pixel_size_nm, "min_particle_px": 0,
               "n_images": sum(n), "splits": {}}
    for split, count in zip(("train", "val", "test"), n):
        imgs, masks = [], []
        for _ in range(count):
            cy, cx, r = *rng.uniform(8, size - 8, 2), rng.uniform(4, 7)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            imgs.append((rng.normal(0, 0.5, (size, size)) + 1.5 * m).astype(np.float32))
            masks.append(m.astype(np.uint8))
        np.save(root / f"{split}_images.npy", np.stack(imgs))
        np.save(root / f"{split}_masks.npy", np.stack(masks))
        summary["splits"][split] = {"patches": count, "micrographs": count, "particle_fraction": 0.1}
    (root / "summary.json").write_text(json.dumps(summary))
    return root
