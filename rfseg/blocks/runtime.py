"""Where and how networks run: device, precision (autocast), memory format, threads, cuDNN settings."""

from __future__ import annotations

import torch

from rfseg.errors import UserError, check_choice

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when PyTorch sees one, else the CPU. Raises UserError for ``cuda`` without a GPU."""
    check_choice("device (--device)", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for (--device; config: compute.device) but no GPU is visible: use "
                        "auto or cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Intra-op CPU threads of this process (at least 1); the workflow passes each job's ``threads``."""
    torch.set_num_threads(max(1, int(threads)))


def configure_cuda(deterministic: bool = True) -> None:
    """cuDNN settings of a training run. Deterministic (the default) makes a seed give bit-identical weights on a
    GPU too; ``deterministic=False`` lets cuDNN benchmark and pick the fastest algorithms, which may differ per run."""
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def cpu_supports_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, or None for plain float32.

    "auto" is bfloat16 on a CPU that supports it (else float32) and bf16/fp16 on a GPU. Raises UserError for "bf16"
    on a CPU without bfloat16 support."""
    check_choice("precision (--precision)", precision, PRECISIONS)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    supported = cpu_supports_bf16()
    if precision == "bf16" and not supported:
        raise UserError("precision bf16 was asked for but this CPU has no bfloat16 support: use auto or fp32")
    return torch.bfloat16 if supported else None


def autocast_factory(device: torch.device, dtype: torch.dtype | None):
    """A zero-argument callable giving the autocast context of a run (a no-op for float32)."""
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def inference_precision(precision: str, device) -> str:
    """The precision inference actually uses. "auto" means bfloat16 on a CPU with bf16 support (2-4x faster there)
    but float32 on a GPU, where these small networks measured faster without autocast at the default overlap (108
    against 75 Mpx/s at 50 % on an H200, docs/explanation/performance.md)."""
    return "fp32" if precision == "auto" and torch.device(device).type == "cuda" else precision


def memory_format(precision: str) -> torch.memory_format:
    """Channels-last for the fast (autocast) path, where oneDNN and cuDNN run faster in it; NCHW for float32."""
    return torch.channels_last if precision != "fp32" else torch.contiguous_format
