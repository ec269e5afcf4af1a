"""Image folders larger than the memory budget: images stay on disk and stream through worker
processes, one decoded batch at a time.

The epoch order comes from a seeded `torch.Generator` whose state is checkpointed, exactly like the
DeviceLoader, so a resumed run sees the same batches. Decoding an image file is per-sample work by
nature; it runs in `workers` processes while the main process trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from trainlab.data import formats
from trainlab.data.loader import SeededBatches
from trainlab.data.shard import batch_rows, gather_rows
from trainlab.errors import TrainlabError


class FileImages:
    """A lazily read image split: (N, C, H, W) uint8 images behind a list of files."""

    def __init__(self, files: list[Path], channels: int, size: tuple[int, int]):
        self.files, self.channels, self.size = list(files), channels, tuple(size)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, *self.size)

    def read(self, index: int) -> torch.Tensor:
        return torch.from_numpy(formats.load_image(self.files[index], self.channels, self.size))

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return (
            torch.stack([self.read(int(i)) for i in indices])
            if len(indices)
            else torch.zeros(0, *self.shape[1:])
        )


class LabelledFiles(Dataset):
    def __init__(self, images: FileImages, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | TrainlabError:
        try:
            return self.images.read(index), self.labels[index]
        except TrainlabError as e:  # returned, not raised: see collate_or_error
            return e


def collate_or_error(items: list) -> tuple[torch.Tensor, torch.Tensor] | TrainlabError:
    """A batch, or the first error of its samples. A DataLoader re-raises a worker's exception with the
    worker's traceback as its message; an error returned as a value reaches the main process as the
    one-line error it is."""
    failed = next((item for item in items if isinstance(item, TrainlabError)), None)
    return default_collate(items) if failed is None else failed


class StreamLoader(SeededBatches):
    """Batches (uint8 images, labels) of `indices` into a FileImages split, decoded by worker processes
    and moved to `device`. Same interface as DeviceLoader, and the same checkpointed epoch order.

    `rows = (rank, world)` shards the decoding of a training loader across the ranks of a distributed
    run: each rank decodes its rows of each global batch (trainlab.data.shard.batch_rows), and the
    ranks gather the global batch, so that augmentation sees it as one process would."""

    rows: tuple[int, int] | None = None

    def __init__(
        self,
        images: FileImages,
        labels: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        workers: int = 2,
        device: torch.device | str = "cpu",
    ):
        self.dataset = LabelledFiles(images, labels)
        self.indices, self.batch_size, self.shuffle, self.drop_last = indices, batch_size, shuffle, drop_last
        self.workers, self.device = workers, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        numbers = self.epoch_batches()
        order = (
            self.indices[torch.randperm(len(self.indices), generator=self.generator)]
            if self.shuffle
            else self.indices
        )
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in numbers]
        if self.rows is not None:
            batches = [batch[batch_rows(len(batch), *self.rows)] for batch in batches]
        batches = [batch.tolist() for batch in batches]
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_or_error,
        )
        for i, batch in zip(numbers, loader):
            if isinstance(batch, TrainlabError):
                raise batch
            images, labels = (t.to(self.device, non_blocking=True) for t in batch)
            if self.rows is not None:
                images, labels = gather_rows(images), gather_rows(labels)
            self.handed_out(i)
            yield images, labels
