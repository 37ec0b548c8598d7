"""How the sliding-window tiling changes prediction dice and speed, on a finished demo run, printed as JSON.

    python -m benchmarks.overlap results                       # hrtem, n2_p22: overlap 0.5, auto tiles, overlap 0.25
    python -m benchmarks.overlap results --dataset lowres --arch n2_p44 --tilings 0.5,auto
    python -m benchmarks.overlap results --published au-5nm-423e     # the shipped real-data folds instead

Each trained model of the architecture (every seed; or each fold of a shipped published network) and their ensemble
segment, through ``rfseg.blocks.predictor``
(the recipe, tiling and blending ``rfseg predict`` uses), the micrographs of the dataset's test split and the
predict step's unseen micrographs when they belong to the dataset; pixel dice of the thresholded probability
against the simulated masks, pooled over the micrographs, per tiling, and the difference to the first tiling. A
tiling is ``auto`` (tiles fitted to each micrograph, stitched exactly: predict's default) or an overlap of
Gaussian-blended tiles of the training patch size. Speed: megapixels of micrograph per second of inference, eager and
compiled, in the precision ``auto`` picks here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks import machine


def _micrographs(results: Path, dataset: str) -> list[tuple[Path, Path]]:
    from rfseg.blocks import artifacts

    index = artifacts.read_patch_index(results / dataset / "patches")
    tests = sorted(index.loc[index["split"] == "test", "source_image"].unique())
    workdir = results.resolve().parent  # the index names micrographs relative to where the workflow ran
    pairs = [(workdir / t, workdir / t.replace("/images/", "/masks/")) for t in tests]
    predict_raw = sorted((results / "predict").glob("*/raw/manifest.csv"))
    for manifest in predict_raw:
        m = pd.read_csv(manifest)
        for image, mask in zip(m["image"], m["mask"]):
            pairs.append((manifest.parent / image, manifest.parent / mask))
    return pairs


def _dice(prob: list[np.ndarray], truth: list[np.ndarray]) -> float:
    inter = sum(int(((p > 0.5) & t).sum()) for p, t in zip(prob, truth))
    total = sum(int((p > 0.5).sum() + t.sum()) for p, t in zip(prob, truth))
    return 2 * inter / total


def main(argv=None):
    from rfseg.blocks import io
    from rfseg.blocks.predictor import Predictor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--dataset", default="hrtem")
    p.add_argument("--arch", default="n2_p22")
    p.add_argument("--published", help="a shipped published network (resources/pretrained/NAME) instead of --arch")
    p.add_argument("--tilings", default="0.5,auto,0.25",
                   help="comma-separated: auto, or overlaps of tiles of the training patch size")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.published:
        from rfseg.stages.importer import PRETRAINED

        models = sorted((PRETRAINED / args.published).glob("fold*"))
    else:
        models = sorted((args.results / args.dataset / "models" / args.arch).glob("seed*"))
    if not models:
        p.error(f"no models of {args.published}: name a folder of resources/pretrained" if args.published else
                f"no trained {args.arch} under {args.results / args.dataset / 'models'}: run the demo first")
    pairs = _micrographs(args.results, args.dataset)
    images = [io.read_image(i) for i, _ in pairs]
    truth = [io.read_mask(m).astype(bool) for _, m in pairs]
    pixels = sum(im.data.size for im in images)
    tilings = [dict(tile="auto") if t == "auto" else dict(tile=None, overlap=float(t))
               for t in args.tilings.split(",")]
    rows = []
    for tiling in tilings:
        row = {"tile": tiling["tile"] or "patch size", "overlap": tiling.get("overlap"), "dice": {}}
        for members, name in [([m], m.name) for m in models] + [(models, "ensemble")]:
            predictor = Predictor(members, device="cpu", **tiling)
            t = time.perf_counter()
            prob = [predictor.micrograph(im.data, im.pixel_size_yx_nm)[0] for im in images]
            row["dice"][name] = _dice(prob, truth)
            if len(members) == 1:
                row.setdefault("eager_mpx_per_s", []).append(pixels / 1e6 / (time.perf_counter() - t))
        predictor = Predictor(models[:1], device="cpu", compile=True, **tiling)
        t = time.perf_counter()
        for shape in {im.data.shape: im for im in images}.values():  # a compiled model compiles once per shape
            predictor.micrograph(shape.data, shape.pixel_size_yx_nm)
        first = time.perf_counter() - t
        t = time.perf_counter()
        for im in images:
            predictor.micrograph(im.data, im.pixel_size_yx_nm)
        row.update(eager_mpx_per_s=float(np.median(row["eager_mpx_per_s"])),
                   compiled_mpx_per_s=pixels / 1e6 / (time.perf_counter() - t), compiled_first_calls_s=first)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    base = rows[0]["dice"]
    for row in rows:
        row["dice_change_vs_first"] = {k: row["dice"][k] - base[k] for k in base}
        row["max_abs_dice_change"] = max(abs(v) for v in row["dice_change_vs_first"].values())
    print(json.dumps({"machine": machine(args.threads), "results": str(args.results), "dataset": args.dataset,
                      "arch": args.published or args.arch, "models": [m.name for m in models],
                      # relative to the folder the workflow ran in, as the patch index names them
                      "micrographs": [os.path.relpath(i, args.results.resolve().parent) for i, _ in pairs],
                      "megapixels": pixels / 1e6, "tilings": rows},
                     indent=2))


if __name__ == "__main__":
    main()
