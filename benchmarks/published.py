"""How the published real-data networks score on simulated HRTEM, printed as JSON.

    python -m benchmarks.published                       # the demo's simulated 5 nm test micrographs
    python -m benchmarks.published --raw results/hrtem/raw --first 19 --n-images 24

Per micrograph: hard dice of each member of a published bundle (whole micrograph against its exact mask, after the
bundle's own preprocessing and resampling to its pixel size, as ``rfseg predict`` runs it) and of their ensemble.
Without ``--raw`` the micrographs are simulated: those of the demo's HRTEM dataset (config.yaml: seed 11, 24
micrographs of 512 px at 0.02152 nm/px) from ``--first`` on, i.e. its test split (micrographs 19-23), since a
micrograph of a seeded dataset does not depend on the ones before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    s = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / s) if s else 1.0


def members(folder) -> list[str]:
    """The bundles inside ``folder`` (a published ensemble's members), sorted."""
    from rfseg.blocks.bundle import is_bundle

    return sorted(str(p) for p in Path(folder).glob("*") if is_bundle(p))


def score(bundle_dirs, micrographs, flat_field: str | None = None) -> dict:
    """Per-member and ensemble hard dice over (name, image, pixel_size_yx_nm, truth) micrographs; ``flat_field``
    replaces the bundles' flat field (``"none"``: each micrograph is a window of a larger one, flat-fielded as a
    whole)."""
    from rfseg.blocks.predictor import Predictor

    predictor = Predictor(bundle_dirs, device="cpu", flat_field=flat_field)
    per_member, ensemble, names = [], [], []
    for name, image, px, truth in micrographs:
        prob, members, _ = predictor.micrograph(image, px, where=name)
        per_member.append([dice(m > 0.5, truth) for m in members])
        ensemble.append(dice(prob > 0.5, truth))
        names.append(name)
    per_member = np.array(per_member)  # (micrographs, members)
    member_means = per_member.mean(0)
    return {"micrographs": names, "members": [Path(d).name for d in bundle_dirs],
            "dice_per_micrograph_and_member": per_member.round(4).tolist(),
            "member_mean_dice": member_means.round(4).tolist(),
            "mean_dice_over_members": float(member_means.mean()),
            "std_dice_over_members": float(member_means.std(ddof=1)) if len(member_means) > 1 else None,
            "ensemble_dice_per_micrograph": np.round(ensemble, 4).tolist(),
            "ensemble_mean_dice": float(np.mean(ensemble))}


def demo_micrographs(raw, first, n_images, seed, size, pixel_size_nm):
    from rfseg.blocks import io

    if raw is None:
        from rfseg.stages.simulate import simulate

        raw = Path(tempfile.mkdtemp()) / "raw"
        simulate("hrtem", raw, n_images=n_images, seed=seed, size=size, pixel_size_nm=pixel_size_nm, threads=2,
                 start=first)
    images = sorted(Path(raw, "images").glob("*.tif"))
    picked = [p for p in images if int(p.stem.rsplit("_", 1)[1]) >= first]
    for p in picked:
        img = io.read_image(p)
        yield p.stem, img.data, img.pixel_size_yx_nm, io.read_mask(Path(raw, "masks", p.name), img.data.shape)


def main(argv=None):
    import torch

    from benchmarks import machine
    from rfseg.stages.importer import PRETRAINED

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", default="au-5nm-423e", help="a shipped bundle name or a folder of bundles")
    ap.add_argument("--raw", help="a simulated dataset folder (images/, masks/); default: simulate the demo's")
    ap.add_argument("--first", type=int, default=19, help="first micrograph index used (the demo's test split)")
    ap.add_argument("--n-images", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--pixel-size", type=float, default=0.02152)
    args = ap.parse_args(argv)
    folder = Path(args.bundles) if "/" in args.bundles else PRETRAINED / args.bundles
    bundles = members(folder)
    t0 = time.perf_counter()
    result = score(bundles, demo_micrographs(args.raw, args.first, args.n_images, args.seed, args.size,
                                             args.pixel_size))
    result.update({"bundles": args.bundles, "data": args.raw or (f"simulated hrtem seed {args.seed}, micrographs "
                                                                f"{args.first}-{args.n_images - 1}"),
                   "seconds": time.perf_counter() - t0,
                   "machine": machine(torch.get_num_threads())})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
