"""The built-in callbacks: progress, metrics.csv, steps.csv, early stopping and checkpoints. The base class
`Callback` (Keras-style hooks into the loop, run in ascending `order`) lives beside the loop in
trainer.py and is re-exported here.

Hooks receive the trainer (model, optimizer, config, run_dir, epoch, global_step, ...). Per-batch hooks
get device tensors, never Python floats, so that a callback does not force a host sync each step;
per-epoch hooks get Python floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainlab.errors import ConfigError
from trainlab.io import atomic_write_text
from trainlab.training.checkpoint import save_checkpoint
from trainlab.training.trainer import Callback, Trainer, TrainingDiverged

if TYPE_CHECKING:
    import torch

__all__ = ["CSVLogger", "Callback", "Checkpointer", "EarlyStopping", "ProgressBar", "StepLogger"]


class ProgressBar(Callback):
    """A rich progress bar over the steps of each epoch, and a table row per epoch.

    The bar advances without reading the loss, so it costs no host-device sync.
    """

    order = 100

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = None

    def on_train_begin(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=trainer.steps_per_epoch, epoch=0, epochs=trainer.epochs
        )

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if self.progress:
            self.progress.reset(self.task, total=trainer.steps_per_epoch, epoch=epoch, epochs=trainer.epochs)

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.progress:
            self.progress.advance(self.task)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        metrics = [k for k in logs if k.startswith(("train_", "val_"))]
        line = f"epoch {epoch:3d}/{trainer.epochs}  " + "  ".join(f"{k} {logs[k]:.4f}" for k in metrics)
        line += f"  lr {logs['lr']:.3g}  {logs['seconds']:.1f}s"
        self.progress.console.print(line)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.progress:
            self.progress.stop()


class CSVLogger(Callback):
    """metrics.csv with one row per epoch, rewritten atomically from the history (so a resumed run
    never holds rows from epochs it is about to repeat)."""

    order = 50

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:

        columns = list(dict.fromkeys(k for row in trainer.history for k in row))
        lines = [",".join(columns)]
        lines += [",".join(format_cell(row.get(c, "")) for c in columns) for row in trainer.history]
        atomic_write_text(self.path, "\n".join(lines) + "\n")


class StepLogger(Callback):
    """steps.csv with one row per optimisation step: step (global, from 1), epoch, loss, lr; rewritten
    atomically at each epoch end. The losses come from the trainer's own per-step device buffer, read
    once per epoch after the trainer has read it itself, so a step costs no extra host-device sync; the
    learning rate is a host float already. The rows and the epoch in flight's learning rates are this
    callback's state, so a resumed run (mid-epoch too) writes the same file as an uninterrupted one."""

    order = 50

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[list[float]] = []  # [step, epoch, loss, lr] of the finished epochs
        self.lrs: list[float] = []  # the learning rate of each step of the epoch in flight
        self.losses: torch.Tensor | None = None  # the trainer's per-step loss buffer of that epoch

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "lrs": self.lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.lrs = [list(row) for row in state["rows"]], list(state["lrs"])

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.losses = trainer.progress["losses"]

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        steps = len(self.lrs)
        losses = self.losses[:steps].tolist() if steps else []
        first = trainer.global_step - steps + 1
        self.rows += [[first + i, epoch, loss, lr] for i, (loss, lr) in enumerate(zip(losses, self.lrs))]
        self.lrs, self.losses = [], None
        lines = ["step,epoch,loss,lr"] + [f"{s},{e},{loss:.6g},{lr:.6g}" for s, e, loss, lr in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")


def format_cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def monitored(trainer: Trainer, monitor: str | None) -> tuple[str, float]:
    """(log key, sign) of a monitored metric: the task's own by default; with sign, larger is better."""
    if monitor is None:
        return f"val_{trainer.task.monitor}", 1.0 if trainer.task.higher_is_better else -1.0
    return monitor, -1.0 if "loss" in monitor or "error" in monitor else 1.0


class EarlyStopping(Callback):
    """Stop when `monitor` (default: the task's validation metric, val_accuracy for classification) has
    not improved by `min_delta` for `patience` epochs; optionally restore the best weights at the end.
    The best weights are part of the callback's state, so a resumed run restores the same ones."""

    order = 20

    def __init__(
        self, patience: int, min_delta: float = 0.0, monitor: str | None = None, restore_best: bool = True
    ):
        self.patience, self.min_delta, self.monitor, self.restore_best = (
            patience,
            min_delta,
            monitor,
            restore_best,
        )
        self.best: float | None = None  # sign * the best value so far
        self.best_epoch, self.wait, self.stopped_epoch = 0, 0, None
        self.best_state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        state["stopped_epoch"] = self.stopped_epoch
        return {**state, "best_state": self.best_state} if self.best_state is not None else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch, self.best_state = state["stopped_epoch"], state.get("best_state")

    def on_validation_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        key, sign = monitored(trainer, self.monitor)
        if key not in logs:
            raise ConfigError(f"early stopping monitors {key!r}, which the run does not log")
        value = sign * logs[key]
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                self.stopped_epoch = epoch

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.eval_model.load_state_dict(self.best_state)


class Checkpointer(Callback):
    """The resume point last.safetensors: every `every` epochs, after the last epoch, and every `steps`
    optimisation steps within an epoch when `steps` > 0 (so a kill loses at most that many steps);
    best.safetensors whenever the task's validation metric improves. `every=0` writes `last` only when
    training ends, for runs so short that a resume point costs more than redoing them. `extra_tensors` /
    `extra_meta` hold what the run adds (preprocessing stats, resolved config, class names). In a
    distributed run it runs on every rank, and rank 0 writes."""

    order = 90

    def __init__(
        self,
        folder: Path,
        extra_tensors: dict | None = None,
        extra_meta: dict | None = None,
        every: int = 1,
        steps: int = 0,
    ):
        if every < 0:
            raise ConfigError(f"train.checkpoint_every={every}: expected 0 (at the end only) or more")
        if steps < 0:
            raise ConfigError(f"train.checkpoint_steps={steps}: expected 0 (off) or more")
        self.folder, self.every, self.steps = Path(folder), every, steps
        self.extra_tensors, self.extra_meta = extra_tensors or {}, extra_meta or {}
        self.best: float | None = None  # sign * the best validation value so far
        self.best_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def save(self, trainer: Trainer, name: str) -> Path:
        weights = trainer.model.state_dict().values()
        if not all(w.isfinite().all() for w in weights if w.is_floating_point()):  # one sync per save
            raise TrainingDiverged(  # not written: the resume point stays the last good one
                f"weights became non-finite by step {trainer.global_step} (epoch {trainer.epoch + 1}); "
                f"last good checkpoint: {trainer.last_checkpoint or 'none written yet'}"
            )
        path = self.folder / f"{name}.safetensors"
        if name == "last":  # recorded before saving, so the checkpoint names itself
            trainer.last_checkpoint = str(path)
        tensors, meta = trainer.state()  # on every rank of a distributed run: it reduces across them
        if trainer.ranks is not None:  # all ranks have reached this step; rank 0 alone writes
            trainer.ranks.barrier()
            if not trainer.ranks.is_writer:
                return path
        save_checkpoint(path, {**tensors, **self.extra_tensors}, {**meta, **self.extra_meta})
        return path

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.steps and trainer.global_step % self.steps == 0 and step + 1 < trainer.steps_per_epoch:
            self.save(trainer, "last")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        key, sign = monitored(trainer, None)
        if key in logs and (self.best is None or sign * logs[key] > self.best):
            self.best, self.best_epoch = sign * logs[key], epoch
            self.save(trainer, "best")
        final = epoch >= trainer.epochs or trainer.stop_training
        if final or (self.every and epoch % self.every == 0):
            self.save(trainer, "last")
