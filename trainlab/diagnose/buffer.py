"""A fixed-size buffer of samples on the device: memory stays bounded however long the run.

Rows are written every `interval` steps. When the buffer is full, every other row is dropped and the
interval doubles, so the buffer always covers the whole run at an even spacing, with at most
`capacity` rows. Writes are device ops (no host sync); the host reads the rows once, at the end.
"""

from __future__ import annotations

import torch


class SampleBuffer:
    def __init__(self, capacity: int, interval: int):
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, got {capacity}")
        self.capacity, self.interval = capacity, max(1, interval)
        self.rows: torch.Tensor | None = None  # (capacity, *shape), allocated on the first write
        self.steps: list[int] = []

    def due(self, step: int) -> bool:
        """Whether `step` is a sampling step (before it runs, so hooks know to record)."""
        return step % self.interval == 0

    def write(self, step: int, values: torch.Tensor) -> None:
        if self.rows is None:
            self.rows = torch.zeros((self.capacity, *values.shape), dtype=values.dtype, device=values.device)
        if len(self.steps) == self.capacity:
            self.rows[: self.capacity // 2] = self.rows[0::2].clone()
            self.steps = self.steps[0::2]
            self.interval *= 2
            if step % self.interval:
                return
        self.rows[len(self.steps)] = values
        self.steps.append(step)

    def read(self) -> tuple[list[int], torch.Tensor]:
        """(steps, rows on the CPU); one host transfer."""
        if self.rows is None:
            return [], torch.zeros(0)
        return list(self.steps), self.rows[: len(self.steps)].float().cpu()

    def nbytes(self) -> int:
        return 0 if self.rows is None else self.rows.numel() * self.rows.element_size()
