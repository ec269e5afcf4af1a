"""Device-resident batches: the whole split sits on the device as uint8 and is sliced per batch.

Each epoch draws one permutation from a seeded `torch.Generator`; its state is part of the checkpoint,
so a resumed run sees exactly the batches the uninterrupted run would have seen. There is no
per-sample Python: a batch is one gather on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class SeededBatches:
    """What every trainlab loader shares: the number of batches of `num_samples` samples, and the seeded
    generator of the epoch order, whose state checkpoints carry."""

    batch_size: int
    drop_last: bool
    generator: torch.Generator

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


class DeviceLoader(SeededBatches):
    """Iterate (images uint8 (B, C, H, W), labels int64 (B,)) batches of tensors already on the device."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, device=self.images.device, generator=self.generator)
            for i in range(len(self)):
                index = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.images[index], self.labels[index]
        else:
            for i in range(len(self)):
                yield (
                    self.images[i * self.batch_size : (i + 1) * self.batch_size],
                    self.labels[i * self.batch_size : (i + 1) * self.batch_size],
                )
