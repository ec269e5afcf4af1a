"""Callbacks: Keras-style hooks into the Trainer's loop, run in ascending `order`.

Hooks receive the trainer (model, optimizer, config, run_dir, epoch, global_step, ...). Per-batch hooks
get device tensors, never Python floats, so that a callback does not force a host sync each step;
per-epoch hooks get Python floats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from trainlab.train.trainer import Trainer


class Callback:
    """Base class; override only the hooks you need. Lower `order` runs first."""

    order: int = 0

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_train_batch_begin(self, trainer: Trainer, step: int) -> None: ...

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None: ...

    def on_validation_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None: ...
