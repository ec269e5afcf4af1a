"""Data-parallel training on several processes with PyTorch's own engine: torch.distributed, a process
group initialised from torchrun's environment (gloo on CPU, NCCL on CUDA) and DistributedDataParallel
(Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB), which
averages the gradients over the ranks during the backward pass.

Exact by construction (docs/distributed.md): `data.batch_size` B is the global batch; every rank draws
the same global batch and augments all of it, and rank r trains on its rows (trainlab.data.shard), so
the mean of the ranks' gradients is the gradient of the batch one process would see. The metric sums of
the epoch in flight are all-reduced once per epoch (and before a checkpoint), never per step.

Without torchrun's environment, or with one process, `init_distributed` returns None and nothing here
runs: a plain run is the run it always was.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainlab.data.shard import batch_rows, rank_world
from trainlab.errors import ConfigError
from trainlab.nn.norm import BatchNorm

TIMEOUT_ENV = "TRAINLAB_DIST_TIMEOUT"  # seconds a collective may wait for a peer before it fails
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: `rank` of `world`, `local_rank` on its machine, its `device`,
    and the run's `seed`, from which the ranks' own seeds derive."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    seed: int

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes every file of the run; the others only train and evaluate."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        return batch_rows(n, self.rank, self.world)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over `model` (which keeps its parameters: DDP only adds hooks).
        It broadcasts rank 0's weights now, and rank 0's buffers (BN statistics) before each forward."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        ids = [self.device.index] if self.device.type == "cuda" else None
        dist.barrier(device_ids=ids)

    def reseed(self, step: int) -> None:
        """The global generators (dropout and the like) of this rank before optimisation step `step`: a
        pure function of (seed, rank, step), so a resumed rank draws what the uninterrupted one drew."""
        torch.manual_seed(rank_seed(self.seed, self.rank, step))

    def broadcast_buffers(self, *models: nn.Module | None) -> None:
        """Rank 0's buffers (BN running statistics) on every rank. DDP broadcasts them before each
        forward, so after the last step of an epoch each rank holds its own: evaluation uses rank 0's,
        which are the ones rank 0 saves."""
        for model in models:
            for buffer in model.buffers() if model is not None else ():
                dist.broadcast(buffer, src=0)

    def reduce_progress(self, progress: dict[str, Any]) -> None:
        """In place: the steps of the epoch in flight since the last reduction become global, with one
        all-reduce for all of them. `sizes` holds the global batch sizes (the loader yields global
        batches on every rank); a step's loss becomes the global batch's mean, sum over ranks of
        (shard mean * shard rows) / global rows, and the task's metric sums move, summed over the ranks,
        into `reduced_sums`. Afterwards the progress is the same on every rank, so a checkpoint of it
        depends neither on the rank that writes it nor on N."""
        done, steps = progress.get("reduced", 0), progress["step"]
        losses, sums, sizes = progress["losses"], progress["sums"], progress["sizes"][done:steps]
        shard_rows = [len(range(n)[self.rows(n)]) for n in sizes]
        device = losses.device
        weights = torch.tensor(shard_rows, dtype=torch.float64, device=device)
        flat = [sums[k].double().reshape(-1) for k in sums]
        packed = torch.cat([losses[done:steps].double() * weights, *flat])
        dist.all_reduce(packed)
        n = steps - done
        global_rows = torch.tensor(sizes, dtype=torch.float64, device=device)
        losses[done:steps] = (packed[:n] / global_rows).to(losses.dtype)
        reduced = progress.setdefault("reduced_sums", {k: torch.zeros_like(v) for k, v in sums.items()})
        offset = n
        for key, value in sums.items():
            part = packed[offset : offset + value.numel()].reshape(value.shape)
            reduced[key] += part.to(value.dtype)
            value.zero_()
            offset += value.numel()
        progress["reduced"] = steps


def progress_sums(progress: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The task's metric sums of an epoch: those reduced over the ranks so far plus this process's."""
    reduced = progress.get("reduced_sums")
    if reduced is None:
        return progress["sums"]
    return {k: v + reduced[k] for k, v in progress["sums"].items()}


def adopt_progress(progress: dict[str, Any]) -> None:
    """A checkpoint's epoch in flight, taken up by the ranks: its steps are global (one process's are,
    and a distributed run reduces before it saves), so their sums count once, as reduced ones."""
    reduced = progress.setdefault(
        "reduced_sums", {k: torch.zeros_like(v) for k, v in progress["sums"].items()}
    )
    for key, value in progress["sums"].items():
        reduced[key] += value
        value.zero_()
    progress["reduced"] = progress["step"]


def rank_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed mixed from (seed, rank, step) by NumPy's SeedSequence (O'Neill's PCG seeding), so
    that neighbouring ranks and steps get unrelated streams."""
    words = np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def init_distributed(device: torch.device, seed: int) -> Ranks | None:
    """This process's Ranks when torchrun started it as one of several (WORLD_SIZE > 1), initialising
    the process group on the first call: NCCL for CUDA, gloo otherwise, with collectives that fail
    after TRAINLAB_DIST_TIMEOUT seconds (default 600) instead of waiting forever for a dead peer.
    Rank r trains on cuda:LOCAL_RANK on CUDA. None for a plain run, or a job of one process."""
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timeout())
        atexit.register(dist.destroy_process_group)
    rank, world = rank_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    return Ranks(rank, world, local_rank, device, seed)


def check_global_batch(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch, but it does not divide among {world} "
            f"processes (expected a multiple of {world})"
        )


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """`train.sync_bn`: every batch norm of `model` that learns its statistics becomes a torch
    SyncBatchNorm (Peng et al. 2018, MegDet: statistics over the global batch) holding the same
    parameter and buffer tensors, so an optimizer built already keeps them and the state_dict keys stay;
    a frozen trainlab BatchNorm, which uses its running statistics, stays as it is. Returns the model."""
    for name, child in model.named_children():
        if isinstance(child, BatchNorm) and not child.frozen:
            sync = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum)
            sync.weight, sync.bias = child.weight, child.bias
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(sync, key, getattr(child, key))
            setattr(model, name, sync.train(child.training))
        else:
            convert_sync_batchnorm(child)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def check_sync_bn(sync_bn: bool, ranks: Ranks | None) -> None:
    if sync_bn and ranks is not None and ranks.device.type != "cuda":
        raise ConfigError(
            "train.sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); on CPU each "
            "rank normalises by its own B/N samples (see docs/distributed.md), or set train.sync_bn=false"
        )
