"""Which precision the matrix work runs in: bf16 autocast where the hardware does bf16 natively, fp32 elsewhere.

    with autocast("cpu", "auto"):      # bf16 on a CPU with AVX-512 BF16 or AMX, fp32 on one without
        model(ids)

Weights stay fp32 (the master copy that training updates and pruning trims); only the matmuls run in bf16.
Measured on the 135M SmolLM2 teacher on 2 cores with AVX-512 BF16 (tests/benchmarks/cpu_precision.py, the
README's benchmark table): the forward passes of importance, the depth scan and evaluation, and the distillation
step, are all faster under bf16 autocast there (1.3x to 2.2x). A CPU without native bf16 would emulate it, which
is not measured here, so 'auto' keeps fp32 there; a recipe or flag can still pin either.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from minitron.core.errors import BadInput

PRECISIONS = ("auto", "bf16", "fp32")

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as /proc/cpuinfo names them) of instructions that compute bf16 matmuls natively."""


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86 AVX-512 BF16 or AMX), read from the kernel's CPU flags;
    False where they cannot be read (macOS, Windows), so the fast path is never assumed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def uses_bf16(device: str | torch.device, precision: str = "auto") -> bool:
    """bf16 for 'bf16'; for 'auto', on GPUs that support it and on CPUs with native bf16."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_native_bf16()


def autocast(device: str | torch.device, precision: str = "auto") -> torch.autocast:
    """The autocast context for `device` at `precision` (disabled, i.e. fp32, when bf16 is not chosen)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is present, else 'cpu'; anything else is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise BadInput(f"--device {device}: a device is cpu, cuda, cuda:N or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {device}: this torch sees no CUDA device; pass --device cpu or auto (in a recipe: "
                       "`device: cpu` or `auto`)")
    return device
