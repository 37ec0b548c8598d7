"""Benchmarks of rfseg: each module prints JSON (see README, Performance)."""


def machine(threads: int) -> dict:
    """What a benchmark ran on: CPU model, cores, the threads it used, bfloat16 support, GPU, torch version."""
    import os
    import platform
    from pathlib import Path

    import torch

    from rfseg.blocks.runtime import cpu_supports_bf16

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "bf16": cpu_supports_bf16(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__}
