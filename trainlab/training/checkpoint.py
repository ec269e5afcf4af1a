"""Checkpoints without pickle: one safetensors file holds every tensor, and its metadata header holds
the JSON for everything else (resolved config, optimizer hyper-parameters, trainer state).

Tensor keys are namespaced: `model.*`, `optim.*`, `rng.*`, `loader.*`, `augment.*`, `preprocess.*`,
`ema.*`, `callbacks.*` (each callback's state_dict()) and `progress.*` (the epoch in flight, for a
mid-epoch resume point). Writes are atomic (trainlab.io): temp file, fsync, rename.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from trainlab.errors import TrainlabError
from trainlab.io import atomic_write_bytes


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` (any device; copied to CPU, contiguous) and JSON-able `meta` atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata={"trainlab": json.dumps(meta)}))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) from a checkpoint written by save_checkpoint; TrainlabError when unreadable."""
    path = Path(path)
    try:
        tensors = load_file(path)
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        meta = json.loads(header.get("__metadata__", {}).get("trainlab", "{}"))
    except FileNotFoundError:
        raise TrainlabError(f"{path}: checkpoint not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainlabError(f"{path}: not a readable trainlab checkpoint ({e})") from None
    return tensors, meta


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (per-parameter buffers) and JSON (hyper-parameters)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, buffers in state["state"].items():
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def pack_state(state: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested JSON-able `state` holding tensors into (tensors keyed `prefix.path`, JSON in which
    each tensor is replaced by {"__tensor__": key}); unpack_state puts it back together."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    return tensors, walk(state, prefix)


def unpack_state(packed: Any, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> Any:
    if isinstance(packed, dict):
        if set(packed) == {"__tensor__"}:
            return tensors[packed["__tensor__"]].to(device)
        return {k: unpack_state(v, tensors, device) for k, v in packed.items()}
    if isinstance(packed, list):
        return [unpack_state(v, tensors, device) for v in packed]
    return packed
