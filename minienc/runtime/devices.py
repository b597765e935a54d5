"""Checking a device name before anything is loaded onto it (one error that names the device and what exists), and
choosing the number format for it."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The devices this PyTorch can use here, e.g. ["cpu"] or ["cpu", "cuda:0", "cuda:1"]."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: the CPU), or a ValueError naming it and the devices available here."""
    if device is None:
        return torch.device("cpu")
    available = available_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r} (device names: cpu, cuda, cuda:N, mps); this machine has "
                         f"{', '.join(available)}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda" and torch.cuda.is_available():
        index = 0 if parsed.index is None else parsed.index
        if index < torch.cuda.device_count():
            return parsed
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return parsed
    build = "" if torch.version.cuda or parsed.type != "cuda" else f" (this PyTorch, {torch.__version__}, has no CUDA)"
    raise ValueError(f"device {str(device)!r} is not available{build}; this machine has {', '.join(available)}")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def native_bfloat16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 in hardware: a CUDA GPU of compute capability 8.0 or later (Ampere
    on), or a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu" or not hasattr(torch.cpu, "get_capabilities"):  # PyTorch < 2.7 cannot tell
        return False
    flags = torch.cpu.get_capabilities()
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))


def check_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A floating-point torch.dtype, a name from DTYPES, or "auto": bfloat16 where the device has it natively (the
    fast path), float16 on a CUDA GPU without it, else float32. None: float32."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if native_bfloat16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES) + ['auto']}")
        return DTYPES[dtype]
    if not dtype.is_floating_point:
        raise ValueError(f"dtype {dtype} is not a floating-point type; choose one of {sorted(DTYPES) + ['auto']}")
    return dtype
