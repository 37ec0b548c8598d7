"""``rfseg predict`` at its defaults on a job of micrographs: whole-job time and megapixels per second, as JSON.

    python -m benchmarks.predict_job                 # 12 micrographs of 2048^2 px through au-5nm-423e fold0
    python -m benchmarks.predict_job --network results/hrtem/models/n2_p44/seed752 --size 4096 --images 16
    python -m benchmarks.predict_job --quick         # seconds: 2 micrographs of 512^2 px (CI)
    python -m benchmarks.predict_job --tile 512 --overlap 0.5 --compile off   # fixed tiles, eager only

A model bundle (default: the shipped real-data network ``resources/pretrained/au-5nm-423e/fold0``, N = 4, 512 px
tiles) segments the same synthetic micrographs (5 nm dark discs in shot noise at the network's pixel size, so no
resampling) through
:class:`rfseg.blocks.predictor.Predictor` as ``rfseg predict`` runs it (the network's preprocessing recipe, its
default tiles, precision ``auto``), once per ``compile`` setting (off, auto, on), each in a fresh process with an empty
Inductor cache, so compilation is paid in full. Per setting: whole-job seconds (loading the model and segmenting,
preprocessing and compilation included; making the synthetic input is not) and megapixels of micrograph per second,
the seconds of each micrograph, and where ``auto`` compiled. From the
``off`` and ``on`` runs: eager and compiled megapixels of tiles per second of the network and the compilation's
seconds, hence the tile work after which compiling has paid for itself (``break_even_tile_mpx``), against the
predictor's :data:`rfseg.blocks.predictor.COMPILE_AFTER_MPX`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np

from benchmarks import machine

NETWORK = "resources/pretrained/au-5nm-423e/fold0"


def micrograph(size: int, seed: int, pixel_size_nm: float) -> np.ndarray:
    """(size, size) float32 counts: dark 5 nm discs on a flat background in Poisson noise."""
    rng = np.random.default_rng(seed)
    r = 2.5 / pixel_size_nm
    yy, xx = np.mgrid[-int(r):int(r) + 1, -int(r):int(r) + 1]
    disc = yy**2 + xx**2 < r**2
    signal = np.full((size + 2 * int(r) + 1,) * 2, 400.0)
    for _ in range(max(1, size * size // 300_000)):
        cy, cx = rng.integers(0, size, 2)
        signal[cy:cy + disc.shape[0], cx:cx + disc.shape[1]][disc] *= 0.7
    return rng.poisson(signal[:size, :size]).astype(np.float32)


def _job(args):
    network, setting, n_images, size, threads, cache, tiling = args
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch

    from rfseg.blocks.predictor import Predictor

    torch.set_num_threads(threads)
    t = time.perf_counter()
    predictor = Predictor([network], device="cpu", compile=setting, job_micrographs=n_images, **tiling)
    load = time.perf_counter() - t
    px = predictor.pixel_size_nm
    seconds, compiled_at = [], None
    for i in range(n_images):
        image = micrograph(size, i, px)  # not timed: the job's input
        t = time.perf_counter()
        predictor.micrograph(image, (px, px))
        seconds.append(time.perf_counter() - t)
        if predictor.compiled and compiled_at is None:
            compiled_at = i
    wall = load + sum(seconds)
    return {"compile": setting, "job_seconds": wall, "job_mpx_per_s": n_images * size**2 / 1e6 / wall,
            "micrograph_seconds": seconds, "compiled_at_micrograph": compiled_at,
            "tile_mpx_per_micrograph": predictor.tile_mpx / n_images, "tile": predictor.tile,
            "overlap": None if predictor.tile == "auto" else predictor.overlap}


def main(argv=None):
    from rfseg.blocks.predictor import COMPILE_AFTER_MPX

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 micrographs of 512 px, compile off and auto only")
    p.add_argument("--network", default=NETWORK, help="a model bundle with a pixel size")
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--size", type=int, default=2048, help="micrograph side in px")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tile", default="auto", help="predict's --tile: auto or a tile size in px")
    p.add_argument("--overlap", type=float, default=0.5, help="predict's --overlap, with a tile size in px")
    p.add_argument("--compile", nargs="+", choices=("off", "auto", "on"), help="the settings to run (default: all)")
    args = p.parse_args(argv)
    n, size = (2, 512) if args.quick else (args.images, args.size)
    settings = args.compile or (("off", "auto") if args.quick else ("off", "auto", "on"))
    tiling = dict(tile="auto") if args.tile == "auto" else dict(tile=int(args.tile), overlap=args.overlap)
    runs = {}
    for setting in settings:
        with tempfile.TemporaryDirectory() as cache, mp.get_context("spawn").Pool(1) as pool:
            runs[setting] = pool.apply(_job, ((args.network, setting, n, size, args.threads, cache, tiling),))
    result = {"machine": machine(args.threads), "quick": args.quick, "network": args.network, "micrographs": n,
              "micrograph_px": size, "compile_after_mpx": COMPILE_AFTER_MPX, "runs": list(runs.values())}
    if {"off", "on"} <= runs.keys():
        # the first micrograph of a run carries its one-off costs (compilation with "on"); the others are steady
        steady = {k: float(np.median(runs[k]["micrograph_seconds"][1:])) for k in ("off", "on")}
        first_extra = {k: runs[k]["micrograph_seconds"][0] - steady[k] for k in ("off", "on")}
        tile_mpx = runs["off"]["tile_mpx_per_micrograph"]
        eager, fast = tile_mpx / steady["off"], tile_mpx / steady["on"]
        compile_s = first_extra["on"] - first_extra["off"]
        result.update(steady_mpx_per_s={k: size**2 / 1e6 / v for k, v in steady.items()},
                      eager_tile_mpx_per_s=eager, compiled_tile_mpx_per_s=fast, compile_seconds=compile_s,
                      break_even_tile_mpx=compile_s / (1 / eager - 1 / fast) if fast > eager else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
