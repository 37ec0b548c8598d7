"""Training and inference throughput of rfseg against a plain reference, printed as JSON.

    python -m benchmarks.throughput            # full: N=2 pools 4,4 and N=4 pools 2,2,2,2; 256 and 512 px patches
    python -m benchmarks.throughput --quick    # seconds: checks that everything runs (CI)
    python -m benchmarks.throughput --paper-run   # also trains a paper-sized N=2 model (216 patches of 512 px, all
                                                  # 8 dihedral forms, 100 epochs, batch 32); default on a GPU
    python -m benchmarks.throughput --sections training --archs n4_p2222 --no-paper-run   # a part only

Reference (the paper's plain setup, kept here as the baseline): eager PyTorch, float32, NCHW, the 8 dihedral
augmentations materialised as numpy arrays and sliced into batches. rfseg: ``rfseg.blocks.training.train_step`` exactly as the
pipeline runs it (patches held as tensors, augmentation on the fly on tensors, channels-last, bfloat16 autocast where
the CPU supports it, CUDA autocast on a GPU). Every configuration runs in a fresh process, so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import machine


def _data(n, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size)).astype(np.float32)
    y = (rng.random((n, size, size)) < 0.2).astype(np.uint8)
    return x, y


def paper_sized_patches(folder):
    """A patch folder in the paper's numbers: 216 train and 31 val patches of 512 px (random data: the speed of
    training does not depend on the content)."""
    from rfseg.blocks import artifacts

    splits = {split: _data(n, 512, seed=len(split)) for split, n in (("train", 216), ("val", 31), ("test", 0))}
    artifacts.write_patch_folder(folder, splits, {"dataset": "paper-sized", "patch_size_px": 512,
                                                  "pixel_size_nm": 0.02152})
    return folder


def dihedral_stack(a: np.ndarray) -> np.ndarray:
    """The 8 dihedral forms of patches (n, H, W) materialised as the paper's code did: (8 n, H, W), form k in rows
    k n to (k + 1) n."""
    return np.concatenate([np.rot90(a, k % 4, axes=(1, 2))[..., ::-1] if k >= 4 else np.rot90(a, k % 4, axes=(1, 2))
                           for k in range(8)]).copy()


def _reference(spec_name, size, batch, steps, threads, device):
    from rfseg.blocks.models import ArchSpec, build_model

    torch.set_num_threads(threads)
    x, y = _data(2 * batch, size)
    aug_x, aug_y = dihedral_stack(x), dihedral_stack(y)
    model = build_model(ArchSpec.from_name(spec_name), seed=1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    order = np.random.default_rng(1).permutation(len(aug_x))

    def step(i):
        b = order[(i * batch) % len(order):][:batch]
        xb = torch.from_numpy(aug_x[b][:, None]).to(device)
        yb = torch.from_numpy(aug_y[b]).long().to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    step.params = sum(p.numel() for p in model.parameters())
    return step


def rfseg_step(spec_name, size, batch, steps, threads, device, precision="auto"):
    """rfseg's training step (``train_step``: channels-last, autocast at ``precision``, on-the-fly augmentation) on
    random patches, as ``step(i)`` running the i-th step; ``step.params`` is the network's parameter count."""
    from rfseg.blocks.augment import epoch_plan
    from rfseg.blocks.models import ArchSpec, build_model
    from rfseg.blocks.runtime import autocast_dtype, autocast_factory
    from rfseg.blocks.training import train_step

    torch.set_num_threads(threads)
    x, y = _data(2 * batch, size)
    memfmt = torch.channels_last
    xt = torch.from_numpy(x)[:, None].to(device).contiguous(memory_format=memfmt)
    yt = torch.from_numpy(y).long().to(device)
    model = build_model(ArchSpec.from_name(spec_name), seed=1).to(device, memory_format=memfmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = autocast_factory(device, autocast_dtype(precision, device))
    idx, ks = epoch_plan(1, 0, len(xt), "all8")
    idx = idx.to(device)

    def step(i):
        j = (i * batch) % len(idx)
        return train_step(model, opt, amp, memfmt, xt, yt, idx[j:j + batch], ks[j:j + batch])

    step.params = sum(p.numel() for p in model.parameters())
    return step


class _GpuUtilisation:
    """Mean GPU utilisation (%) sampled every 50 ms through NVML while the block runs (None without NVML)."""

    def __enter__(self):
        import threading

        self.samples, self._stop = [], threading.Event()

        def sample():
            while not self._stop.wait(0.05):
                try:
                    self.samples.append(torch.cuda.utilization())
                except Exception:
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self):
        return float(np.mean(self.samples)) if self.samples else None


def _peak_memory(util=None) -> dict:
    """Peak RSS of this process and, on a GPU, peak device memory and the mean utilisation sampled by ``util``."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if util is not None:
            out["gpu_utilisation_pct"] = util.mean
    return out


def _time_training(args):
    method, spec_name, size, batch, steps, threads = args
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        from rfseg.blocks.runtime import configure_cuda

        configure_cuda(deterministic=method != "rfseg_cudnn_benchmark")
    build = _reference if method == "reference" else rfseg_step
    step = build(spec_name, size, batch, steps, threads, device)
    for i in range(3):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    util = _GpuUtilisation() if device.type == "cuda" else contextlib.nullcontext()
    with util:
        t = time.perf_counter()
        losses = [step(i) for i in range(steps)]
        float(losses[-1])
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    # what was timed: the trained network's size and the loss of the first and last timed step
    return {"patches_per_s": steps * batch / dt, "params": step.params, "loss_first": float(losses[0]),
            "loss_last": float(losses[-1]), **_peak_memory(util if device.type == "cuda" else None)}


def _paper_run(args):
    """Wall time of ``rfseg.stages.train.train`` on a paper-sized N=2 (pools 4,4) task: 216 train and 31 val patches of
    512 px (random data: the time does not depend on the content), all 8 dihedral forms per epoch, batch 32."""
    epochs, threads = args
    import tempfile

    from rfseg.blocks.models import ArchSpec
    from rfseg.stages.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(sys.stderr):
        paper_sized_patches(f"{d}/p")
        cfg = TrainConfig(epochs=epochs, batch_size=32, lr=1e-4, augment="all8")
        cuda = torch.cuda.is_available()
        util = _GpuUtilisation() if cuda else contextlib.nullcontext()
        with util:
            t = time.perf_counter()
            meta = train(f"{d}/p", f"{d}/model", ArchSpec(2, (4, 4)), 752, cfg, threads=threads)
            dt = time.perf_counter() - t
    return {"epochs": epochs, "train_patches": 216, "patch_px": 512, "augment": "all8", "batch": 32,
            "seconds": dt, "minutes": dt / 60, "seconds_per_epoch": dt / epochs, "device": meta["device"],
            "autocast": meta["autocast"], **_peak_memory(util if cuda else None)}


def _time_inference(args):
    spec_name, size, tile, overlap, threads, precision, compile_model = args
    from rfseg.blocks.inference import compiled, sliding_window_probability
    from rfseg.blocks.models import ArchSpec, build_model, fold_batch_norm

    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # prepared as the Predictor prepares every network it runs
    model = fold_batch_norm(build_model(ArchSpec.from_name(spec_name), seed=1).to(device))
    if compile_model:
        model = compiled(model)
    image = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    kw = dict(device=device, precision=precision, batch_size=8)
    t = time.perf_counter()
    # warm-up on the same image: compilation (once per batch shape, the last partial batch included) is not timed
    sliding_window_probability(model, image, tile, overlap, **kw)
    warmup = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    sliding_window_probability(model, image, tile, overlap, **kw)
    dt = time.perf_counter() - t
    return {"warmup_seconds": warmup, "megapixels_per_s": size * size / dt / 1e6, "seconds": dt,
            "peak_rss_mb": _peak_memory()["peak_rss_mb"]}


def _accuracy(args):
    """Test dice of the same short training in float32 and in the fast path (and a second fp32 seed for noise)."""
    epochs, threads = args
    import tempfile

    from rfseg.blocks.models import ArchSpec
    from rfseg.stages.evaluate import evaluate
    from rfseg.stages.patches import make_patches
    from rfseg.stages.preprocess import preprocess
    from rfseg.stages.simulate import simulate
    from rfseg.stages.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(sys.stderr):
        simulate("lowres", f"{d}/sim", n_images=6, seed=3, size=256)
        preprocess(f"{d}/pre", manifest=f"{d}/sim/manifest.csv")
        make_patches(f"{d}/pre", f"{d}/p", patch_size_px=128, min_particle_px=200)
        out = {}
        for label, precision, seed in [("fp32", "fp32", 1), ("fast", "auto", 1), ("fp32_seed2", "fp32", 2)]:
            cfg = TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, augment="random8", precision=precision)
            train(f"{d}/p", f"{d}/{label}", ArchSpec(2, (2, 2)), seed, cfg, threads=threads)
            out[label] = evaluate(f"{d}/{label}", f"{d}/p", f"{d}/e{label}", "bench")["global_dice"]
        out["fast_minus_fp32"] = out["fast"] - out["fp32"]
        out["seed_noise_fp32"] = out["fp32_seed2"] - out["fp32"]
        return out


def _run(fn, args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, (args,))


SECTIONS = {"training", "inference", "accuracy"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts, only to check it works")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--paper-run", action=argparse.BooleanOptionalAction, default=None,
                   help="also time a paper-sized training run (default: on a GPU only; hours on a CPU)")
    p.add_argument("--archs", default="n2_p44,n4_p2222", help="architectures of the training section")
    p.add_argument("--paper-epochs", type=int, default=100, help="epochs of the paper-sized run (default 100)")
    p.add_argument("--sections", default="training,inference,accuracy",
                   help="comma-separated subset of training,inference,accuracy, or empty for none (default: all)")
    args = p.parse_args(argv)
    sections = set(filter(None, args.sections.split(",")))
    if sections - SECTIONS:
        p.error(f"--sections: unknown section(s) {sorted(sections - SECTIONS)}; choose from {sorted(SECTIONS)}")
    cuda = torch.cuda.is_available()
    archs = args.archs.split(",")
    if args.quick:
        train_cfgs = [(a, 64, 8) for a in archs]
        steps, inf, acc_epochs = 2, ("n2_p44", 512, 128, 0.5), 2
    else:
        train_cfgs = [(a, s, b) for a in archs for s, b in ((256, 16), (512, 8), (512, 32))]
        steps, inf, acc_epochs = (50 if cuda else 20), ("n2_p44", 4096, 512, 0.5), 15
    methods = ("reference", "rfseg", "rfseg_cudnn_benchmark") if cuda else ("reference", "rfseg")
    result = {"machine": machine(args.threads),
              "quick": args.quick, "training": []}
    for arch, size, batch in train_cfgs if "training" in sections else []:
        row = {"arch": arch, "patch_px": size, "batch": batch, "steps": steps}
        for method in methods:
            row[method] = _run(_time_training, (method, arch, size, batch, steps, args.threads))
        row["speedup"] = row["rfseg"]["patches_per_s"] / row["reference"]["patches_per_s"]
        result["training"].append(row)
        print(json.dumps(row), flush=True, file=sys.stderr)
    arch, size, tile, _ = inf
    # the fast precision: "auto" is bf16 on a CPU that supports it, but float32 on a GPU, so ask for bf16 there
    fast = "bf16" if cuda else "auto"
    # (tile px, overlap, precision, torch.compile); the last row is one tile over the whole image: the upper bound
    inference_cfgs = [(tile, 0.5, "fp32", False), (tile, 0.5, fast, False), (tile, 0.25, "fp32", False),
                      (tile, 0.25, fast, False)]
    if not args.quick:
        inference_cfgs += [(tile, 0.5, fast, True), (tile, 0.25, fast, True), (tile, 0.125, fast, True),
                           (size, 0.0, fast, True)]
    if "inference" in sections:
        result["inference"] = []
        for tile_px, overlap, precision, compile_model in inference_cfgs:
            row = {"arch": arch, "image_px": size, "tile_px": tile_px, "overlap": overlap, "precision": precision,
                   "compile": compile_model,
                   **_run(_time_inference, (arch, size, tile_px, overlap, args.threads, precision, compile_model))}
            result["inference"].append(row)
            print(json.dumps(row), flush=True, file=sys.stderr)
    if "accuracy" in sections:
        result["accuracy"] = {"epochs": acc_epochs, **_run(_accuracy, (acc_epochs, args.threads))}
    if args.paper_run or (args.paper_run is None and cuda and not args.quick):
        result["paper_sized_training"] = _run(_paper_run, (args.paper_epochs, args.threads))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
