"""Choosing the device a run uses, and waiting for it."""

from __future__ import annotations

import os

import torch

from trainlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}, but CUDA is not available here (expected auto or cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"train.device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock reading charges it to the right phase."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
