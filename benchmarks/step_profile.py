"""Where one training step's time goes, on the CPU at hand, printed as JSON.

    python -m benchmarks.step_profile                       # the demo's step: n2_p44, batch 4 of 256 px, 1 thread
    python -m benchmarks.step_profile --batch 16 --threads 2
    python -m benchmarks.step_profile --quick               # seconds: checks that it runs (CI)

The step is ``rfseg.blocks.training.train_step`` as ``rfseg train`` runs it (channels-last, the precision's autocast,
augmentation on the fly) on random patches, built as the throughput benchmark builds it. Three parts:

- ``speed``: patches/s of the step without the profiler, the median of ``--repeats`` timed runs, each in a fresh
  process after warm-up steps, so the profiler's own cost does not enter it; once with the memory setting every
  ``rfseg`` command makes (``reuse``: freed memory kept for the next step, ``rfseg.cli.reuse_freed_memory``) and
  once with glibc's default (``glibc_default``), the runs interleaved, with the page faults of each;
- ``ops``: ``torch.profiler`` over the same steps, self CPU time per step grouped by operator and input shape, the
  largest first, each with its share of the profiled step;
- ``onednn``: the oneDNN primitives the step ran (``ONEDNN_VERBOSE=1`` in a child process), grouped by primitive,
  implementation and direction: which kernels the CPU gets (``avx512_core_bf16``, ``avx512_core_amx`` on Intel CPUs
  with AMX, ``gemm:jit``, ``ref`` for slow fallbacks) and the milliseconds they report, against the profiler's
  total, so time spent around the kernels (copies, layout changes, allocation) shows as the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from benchmarks import machine
from rfseg.cli import reuse_freed_memory

#: the process's memory setting in the timed runs: as every rfseg command sets it, and glibc's default
ALLOCATORS = ("reuse", "glibc_default")


def _step_runner(arch: str, batch: int, patch_px: int, threads: int, precision: str):
    """A function running the next k training steps (:func:`benchmarks.throughput.rfseg_step`), and the autocast
    dtype."""
    import torch

    from benchmarks.throughput import rfseg_step
    from rfseg.blocks.runtime import autocast_dtype

    device = torch.device("cpu")
    step = rfseg_step(arch, patch_px, batch, 0, threads, device, precision)
    done = {"steps": 0}

    def run(k: int) -> None:
        for _ in range(k):
            step(done["steps"])
            done["steps"] += 1

    dtype = autocast_dtype(precision, device)
    return run, (str(dtype).replace("torch.", "") if dtype else "fp32")


def _ops(run, steps: int, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(steps)
    events = prof.key_averages(group_by_input_shape=True)
    total_ms = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]  # shapes of tensors; scalars dropped
    return {"profiled_ms_per_step": round(total_ms, 2),
            "top": [{"op": e.key, "input_shapes": str([s for s in e.input_shapes if s]),
                     "calls_per_step": e.count / steps,
                     "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
                     "share": round(e.self_cpu_time_total / 1e3 / steps / total_ms, 4)} for e in rows]}


def _child(args, flag: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """This benchmark in a fresh process with the same step, doing what ``flag`` says."""
    cmd = [sys.executable, "-m", "benchmarks.step_profile", "--arch", args.arch, "--batch", str(args.batch),
           "--patch-px", str(args.patch_px), "--threads", str(args.threads), "--precision", args.precision,
           "--steps", str(args.steps), flag]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True)


def _onednn(args, steps: int) -> dict:
    """The oneDNN primitives of ``steps`` steps (after warm-up), from a child process with ONEDNN_VERBOSE=1."""
    proc = _child(args, "--_verbose-child", {"ONEDNN_VERBOSE": "1"})
    lines = [ln.split(",") for ln in proc.stdout.splitlines() if ln.startswith("onednn_verbose,")]
    marker = next(i for i, ln in enumerate(lines) if ln[-1] == "timed-steps-start")  # drop the warm-up steps
    groups: dict = defaultdict(lambda: [0, 0.0])
    for f in lines[marker + 1:]:
        if len(f) > 7 and f[2] == "primitive" and f[3] == "exec":
            key = (f[5], f[6], f[7])  # primitive, implementation, direction
            groups[key][0] += 1
            groups[key][1] += float(f[-1])
    rows = [{"primitive": p, "implementation": impl, "direction": d, "calls_per_step": c / steps,
             "ms_per_step": round(ms / steps, 3)} for (p, impl, d), (c, ms) in groups.items()]
    rows.sort(key=lambda r: -r["ms_per_step"])
    return {"ms_per_step": round(sum(r["ms_per_step"] for r in rows), 2),
            "convolution_isa": ", ".join(sorted({r["implementation"].split(":")[-1] for r in rows
                                                 if r["primitive"] == "convolution" and ":" in r["implementation"]})),
            "primitives": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="n2_p44")
    p.add_argument("--batch", type=int, default=4, help="patches per step (the demo's 4)")
    p.add_argument("--patch-px", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="the demo's one thread per training job")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=40, help="steps per timed run and per profile")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; their median is reported")
    p.add_argument("--top", type=int, default=25, help="operator rows kept")
    p.add_argument("--quick", action="store_true", help="a small patch and few steps, only to check it works")
    p.add_argument("--_verbose-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_timing-child", choices=ALLOCATORS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.patch_px, args.steps, args.repeats, args.top = 64, 3, 2, 5
    if args._timing_child != "glibc_default":
        reuse_freed_memory()
    run, autocast = _step_runner(args.arch, args.batch, args.patch_px, args.threads, args.precision)
    run(3)  # warm-up: oneDNN builds its kernels on first use
    if args._verbose_child:
        print("onednn_verbose,timed-steps-start", flush=True)
        run(args.steps)
        return
    if args._timing_child:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        run(args.steps)
        seconds = time.perf_counter() - t
        print(json.dumps({"patches_per_s": args.steps * args.batch / seconds,
                          "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                          / args.steps}))
        return
    runs = {a: [] for a in ALLOCATORS}
    for _ in range(args.repeats):
        for allocator in ALLOCATORS:
            runs[allocator].append(json.loads(_child(args, f"--_timing-child={allocator}").stdout))
    speed = {a: {"patches_per_s": round(statistics.median(r["patches_per_s"] for r in rs), 2),
                 "page_faults_per_step": round(statistics.median(r["page_faults_per_step"] for r in rs)),
                 "runs_patches_per_s": [round(r["patches_per_s"], 2) for r in rs]} for a, rs in runs.items()}
    speed["reuse_over_default"] = round(speed["reuse"]["patches_per_s"] / speed["glibc_default"]["patches_per_s"], 3)
    result = {"machine": machine(args.threads), "quick": args.quick,
              "step": {"arch": args.arch, "batch": args.batch, "patch_px": args.patch_px, "threads": args.threads,
                       "precision": args.precision, "autocast": autocast, "steps": args.steps},
              "speed": speed,
              "ops": _ops(run, args.steps, args.top),
              "onednn": _onednn(args, args.steps)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
