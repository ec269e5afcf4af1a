"""TensorBoard event files for a run: `trainlab train --tensorboard` (config `log.tensorboard = true`).

    RUN/tensorboard/events.out.tfevents.*     open with `tensorboard --logdir RUN/tensorboard`

Written, all on one step axis (the global optimisation step, 1 for the first step):
    train/loss, train/lr      each step's training loss and the learning rate it used
    epoch/<metric>            every metric of metrics.csv (train_loss, val_accuracy, lr, seconds, ...),
                              at the step that ends the epoch
    weights/<param>, gradients/<param>
                              histograms at each epoch's end, with diagnostics on (`train.diagnose`);
                              the gradients are those of the epoch's last step
    hparams                   the resolved config, flattened (optim.lr, model.name, ...), with the epoch
                              metrics as its metrics, in the same run as the scalars

Per-step values cost no host-device sync per step: the trainer keeps each step's loss in a device
buffer for the epoch, read here once at the epoch's end, and the learning rate is a host float.

PyTorch's `SummaryWriter.add_hparams` writes the hparams into a new sub-directory, that is, a second run
beside the scalars (pytorch/pytorch#32651); here the same three summaries
(`torch.utils.tensorboard.summary.hparams`) go into the writer's own event file.

A resumed run appends a new event file whose first event purges (`purge_step`) every event from the
first step of the epoch it resumes in, so steps that an interrupted process logged and the resumed one
repeats are shown once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainlab.config import flatten
from trainlab.errors import TrainlabError
from trainlab.training.trainer import Callback, Trainer

if TYPE_CHECKING:
    import torch

EXTRA_MISSING = "log.tensorboard needs the tensorboard extra: pip install 'trainlab[tensorboard]'"


def summary_writer_class():
    """torch's SummaryWriter; a one-line TrainlabError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard imports tensorboard at import time
        raise TrainlabError(EXTRA_MISSING) from None
    return SummaryWriter


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams: one entry per dotted key; tables and lists as JSON text
    (hparams hold numbers, strings and bools only); unset (None) keys left out, as torch leaves them."""
    values = {}
    for key, value in flatten(config):
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        if value is not None:
            values[key] = value
    return values


class TensorBoardLogger(Callback):
    """Scalars per step and per epoch, histograms when asked, and the run's hparams, into `log_dir`."""

    order = 60  # after CSVLogger, before Checkpointer: a checkpoint holds the lrs of the steps it covers

    def __init__(self, log_dir: Path, config: dict[str, Any], histograms: bool = False):
        self.writer_class = summary_writer_class()  # fails here, before any training step
        self.log_dir, self.config, self.histograms = Path(log_dir), config, histograms
        self.writer = None
        self.epoch_progress: dict[str, Any] | None = None  # the trainer's buffers of the epoch in flight
        self.lrs: list[float] = []  # the lr of each step of the epoch in flight

    def state_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lrs = list(state["lrs"])

    def on_train_begin(self, trainer: Trainer) -> None:
        # Events from this step on, in files already there, are what this process repeats.
        begun = trainer.progress["step"] if trainer.progress else 0
        first_step = trainer.global_step - begun + 1
        self.writer = self.writer_class(str(self.log_dir), purge_step=first_step)

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        self.epoch_progress = trainer.progress  # holds the loss buffer; read at the epoch's end
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])  # set by the trainer before this step

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        progress, end = self.epoch_progress, trainer.global_step
        steps = progress["step"]
        first = end - steps + 1
        for i, loss in enumerate(progress["losses"][:steps].tolist()):  # one sync per epoch
            self.writer.add_scalar("train/loss", loss, first + i)
        lrs = self.lrs[-steps:]  # all of the epoch's, unless this callback joined it mid-way
        for i, lr in enumerate(lrs):
            self.writer.add_scalar("train/lr", lr, end - len(lrs) + 1 + i)
        metrics = {f"epoch/{k}": v for k, v in logs.items() if k != "epoch"}
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, end)
        if self.histograms:
            self.write_histograms(trainer, end)
        if epoch == 1:  # once per run (a resume that repeats epoch 1 writes the same again)
            self.write_hparams(list(metrics), end)
        self.writer.flush()
        self.epoch_progress, self.lrs = None, []

    def write_histograms(self, trainer: Trainer, step: int) -> None:
        for name, param in trainer.model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach(), step)
            if param.grad is not None:
                self.writer.add_histogram(f"gradients/{name}", param.grad, step)

    def write_hparams(self, metric_tags: list[str], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        # The metrics' values are the scalars of these tags; hparams() takes only their names.
        for summary in hparams(hparam_values(self.config), dict.fromkeys(metric_tags, 0.0)):
            self.writer.file_writer.add_summary(summary, step)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
