"""Device-resident batches: the whole split sits on the device as uint8 and is sliced per batch.

Each epoch draws one permutation from a seeded `torch.Generator`; its state is part of the checkpoint,
so a resumed run sees exactly the batches the uninterrupted run would have seen. There is no
per-sample Python: a batch is one gather on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from trainlab.data.shard import batch_block

Targets = torch.Tensor | dict[str, torch.Tensor]


def index_targets(targets: Targets, index: torch.Tensor | slice) -> Targets:
    """Select samples of a target tensor, or of every tensor in a dict of targets (boxes, masks, ...)."""
    if isinstance(targets, dict):
        return {key: value[index] for key, value in targets.items()}
    return targets[index]


def num_targets(targets: Targets) -> int:
    return len(next(iter(targets.values()))) if isinstance(targets, dict) else len(targets)


class SeededBatches:
    """What every trainlab loader shares: the number of batches of `num_samples` samples, and the seeded
    generator of the epoch order, whose state checkpoints carry.

    Mid-epoch, the state is the generator as it was when the epoch drew its order, plus the number of
    batches already handed out; a loader loaded with it redraws the same order and goes on from there,
    so a run resumed from a mid-epoch checkpoint sees exactly the batches it would have seen."""

    batch_size: int
    drop_last: bool
    generator: torch.Generator
    position: int = 0  # batches of the current epoch handed out so far
    epoch_state: torch.Tensor | None = None  # the generator before it drew this epoch's order
    # (rank, world): yield only this rank's contiguous block of the batches (trainlab.data.shard)
    block: tuple[int, int] | None = None

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.position and self.epoch_state is not None:
            return {"generator": self.epoch_state, "position": torch.tensor(self.position)}
        return {"generator": self.generator.get_state(), "position": torch.tensor(0)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.position = int(state.get("position", 0))

    def epoch_batches(self) -> range:
        """The batch numbers this pass yields: from a resumed position, or from the start. Records the
        generator's state before the caller draws the epoch's order."""
        start, self.position = self.position, 0
        self.epoch_state = self.generator.get_state()
        if self.block is not None:  # an evaluation split sharded across ranks: never resumed mid-pass
            return batch_block(len(self), *self.block)
        return range(start, len(self))

    def handed_out(self, batch: int) -> None:
        self.position = batch + 1 if batch + 1 < len(self) and self.block is None else 0


class DeviceLoader(SeededBatches):
    """Iterate (images uint8 (B, C, H, W), targets (B, ...) or a dict of them) batches of tensors already
    on the device."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: Targets,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ):
        if len(images) != num_targets(targets):
            raise ValueError(f"{len(images)} images but {num_targets(targets)} targets")
        self.images, self.targets = images, targets
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Targets]]:
        batches = self.epoch_batches()
        order = None
        if self.shuffle:
            order = torch.randperm(len(self.images), device=self.images.device, generator=self.generator)
        for i in batches:
            span = slice(i * self.batch_size, (i + 1) * self.batch_size)
            index = order[span] if order is not None else span
            self.handed_out(i)
            yield self.images[index], index_targets(self.targets, index)
