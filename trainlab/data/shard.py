"""Exact shards of batches and splits across the ranks of a torch.distributed job.

Two rules make N ranks see exactly what one process sees:

- training: every rank draws the same global batch of B samples (the same seeded order), and rank r
  keeps the contiguous rows `batch_rows(B, r, N)` of it, B/N rows when N divides B;
- evaluation: a split of K batches is cut into N contiguous blocks of whole batches,
  `batch_block(K, r, N)`, so each batch is the batch one process evaluates (same images, same size,
  so the same outputs), nothing is padded and nothing is dropped; `gather_rows` joins the ranks'
  outputs in rank order, which is the split's order.

Without a process group (a plain run) there is one rank, and everything here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_rows(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous rows of a batch of `n`: n / world of them when world divides n; else
    the first n % world ranks hold one more (the same split as torch.tensor_split)."""
    return slice(rank * n // world, (rank + 1) * n // world)


def batch_block(num_batches: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of `num_batches` evaluation batches (none empty when
    num_batches >= world)."""
    return range(rank * num_batches // world, (rank + 1) * num_batches // world)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` (same trailing shape and dtype, any number of rows), joined along dim 0 in rank
    order, on every rank. Collectives need equal shapes: the rows are padded to the longest and cut."""
    rank, world = rank_world()
    if world == 1:
        return x
    rows = torch.tensor([len(x)], device=x.device)
    counts = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(counts, rows)
    longest = max(int(c) for c in counts)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(c)] for part, c in zip(parts, counts)])


def gather_targets(targets: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
    """gather_rows of a target tensor, or of each tensor of a dict of targets (every rank's dict has the
    same keys in the same order: the split's)."""
    if isinstance(targets, dict):
        return {key: gather_rows(value) for key, value in targets.items()}
    return gather_rows(targets)


def shard_evaluation(loader):
    """Give `loader` (a DeviceLoader or StreamLoader, unshuffled) this rank's block of its batches, so
    that Predictor.run evaluates the block and gathers the whole split. A split of fewer batches than
    ranks is left whole: every rank evaluates all of it (no rank may be empty), which is as exact."""
    rank, world = rank_world()
    loader.block = (rank, world) if world > 1 and len(loader) >= world else None
    return loader
