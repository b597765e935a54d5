"""Checking a device name before anything is loaded onto it: one error that names the device and what exists."""

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
