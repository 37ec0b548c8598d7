"""Benchmarks of rfseg: each module prints JSON (see docs/explanation/performance.md)."""

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_kind(model: str, flags: set[str]) -> str:
    """A short name for the kind of CPU, as stored benchmark file names use it: e.g. ``amd-epyc-bf16``,
    ``intel-xeon-amx``, ``amd-epyc-fp32``."""
    vendor = "intel-xeon" if "xeon" in model.lower() else "amd-epyc" if "epyc" in model.lower() else "cpu"
    if "amx_bf16" in flags:
        return f"{vendor}-amx"
    return f"{vendor}-bf16" if "avx512_bf16" in flags else f"{vendor}-fp32"


def machine(threads: int) -> dict:
    """What a benchmark ran on and when: CPU model, its kind and relevant flags (AVX2, AVX-512, bfloat16, AMX), its
    family/model/stepping numbers and clock (MHz) as /proc/cpuinfo gives them, cores, the threads it used, bfloat16
    support as PyTorch sees it, GPU, torch version, the commit of the code (with ``+dirty`` when it had uncommitted
    changes) and the date."""
    import datetime
    import os
    import platform
    import subprocess
    from pathlib import Path

    import torch

    from rfseg.blocks.runtime import cpu_supports_bf16

    model, flags, fields = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
        model, flags = fields.get("model name", model), set(fields.get("flags", "").split())
    except OSError:
        pass
    # virtual machines often name only the vendor ("AMD EPYC"): family/model/stepping tell the generation apart
    generation = "/".join(fields[k] for k in ("cpu family", "model", "stepping") if k in fields) or None
    mhz = round(float(fields["cpu MHz"])) if "cpu MHz" in fields else None
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "kind": cuda or cpu_kind(model, flags), "flags": sorted(flags & set(FLAGS)),
            "cpu_family_model_stepping": generation, "cpu_mhz": mhz, "cores": os.cpu_count(), "threads": threads,
            "bf16": cpu_supports_bf16(), "cuda": cuda, "torch": torch.__version__, "commit": commit,
            "date": datetime.date.today().isoformat()}
