"""Callbacks: Keras-style hooks into the Trainer's loop, run in ascending `order`.

Hooks receive the trainer (model, optimizer, config, run_dir, epoch, global_step, ...). Per-batch hooks
get device tensors, never Python floats, so that a callback does not force a host sync each step;
per-epoch hooks get Python floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainlab.errors import ConfigError

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
        line = f"epoch {epoch:3d}/{trainer.epochs}  loss {logs['train_loss']:.4f}"
        line += f"  acc {logs['train_accuracy']:.4f}"
        if "val_loss" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.4f}"
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
        from trainlab.train.checkpoint import atomic_write_text

        columns = list(dict.fromkeys(k for row in trainer.history for k in row))
        lines = [",".join(columns)]
        lines += [",".join(format_cell(row.get(c, "")) for c in columns) for row in trainer.history]
        atomic_write_text(self.path, "\n".join(lines) + "\n")


def format_cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; optionally restore
    the best weights at the end (kept in memory, on the device)."""

    order = 20

    def __init__(
        self, patience: int, min_delta: float = 0.0, monitor: str = "val_accuracy", restore_best: bool = True
    ):
        self.patience, self.min_delta, self.monitor, self.restore_best = (
            patience,
            min_delta,
            monitor,
            restore_best,
        )
        self.sign = 1.0 if "accuracy" in monitor else -1.0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        state = trainer.extra_state.setdefault("early_stopping", {"best": None, "best_epoch": 0, "wait": 0})
        value = self.sign * logs[self.monitor]
        if state["best"] is None or value > state["best"] + self.min_delta:
            state.update(best=value, best_epoch=epoch, wait=0)
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
        else:
            state["wait"] += 1
            if state["wait"] >= self.patience:
                trainer.stop_training = True
                trainer.extra_state["stopped_early_at"] = epoch

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.eval_model.load_state_dict(self.best_state)


class Checkpointer(Callback):
    """last.safetensors every `every` epochs and after the last one (the resume point), and
    best.safetensors when the validation accuracy improves. `every=0` writes `last` only when training
    ends, for runs so short that a resume point costs more than redoing them. `extra_tensors` /
    `extra_meta` hold what the run adds (preprocessing stats, resolved config, class names)."""

    order = 90

    def __init__(
        self,
        folder: Path,
        extra_tensors: dict | None = None,
        extra_meta: dict | None = None,
        every: int = 1,
    ):
        if every < 0:
            raise ConfigError(f"train.checkpoint_every={every}: expected 0 (at the end only) or more")
        self.folder, self.every = Path(folder), every
        self.extra_tensors, self.extra_meta = extra_tensors or {}, extra_meta or {}

    def save(self, trainer: Trainer, name: str) -> Path:
        from trainlab.train.checkpoint import save_checkpoint

        path = self.folder / f"{name}.safetensors"
        save_checkpoint(
            path,
            {**trainer.state_tensors(), **self.extra_tensors},
            {**trainer.state_meta(), **self.extra_meta},
        )
        return path

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        best = trainer.extra_state.get("best_val_accuracy")
        if "val_accuracy" in logs and (best is None or logs["val_accuracy"] > best):
            trainer.extra_state["best_val_accuracy"] = logs["val_accuracy"]
            trainer.extra_state["best_epoch"] = epoch
            self.save(trainer, "best")
        final = epoch >= trainer.epochs or trainer.stop_training
        if final or (self.every and epoch % self.every == 0):
            trainer.extra_state["last_checkpoint"] = str(self.folder / "last.safetensors")
            self.save(trainer, "last")
