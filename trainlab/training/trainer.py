"""The Trainer: one loop for every task, with the lecture's switches plugged in.

    trainer = Trainer(model, optimizer, epochs=5, task=create_task("classification"), transform=standardizer)
    history = trainer.fit(train_loader, val_loader)

Per step: uint8 batch -> float [0, 1] -> augment (may return soft targets) -> preprocess -> forward
(bf16 autocast on CUDA) -> the task's loss (+ penalty) -> backward -> clip -> step. The loss of each
step, the task's metric sums and the first non-finite step accumulate in device tensors; the host reads
them once per epoch, so there is no host-device sync per step. What the task is (classification,
regression, ...) is the Task's business: nothing here assumes labels or logits. In a distributed run
(`ranks`, trainlab.training.distributed) the loader yields global batches, each rank trains on its rows
through DDP, and the epoch's sums are all-reduced once per epoch (docs/distributed.md).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from trainlab.data.loader import index_targets, num_targets
from trainlab.data.preprocess import as_float01
from trainlab.device import synchronize
from trainlab.errors import TrainlabError
from trainlab.inference import Predictor, Transform, model_input, uses_bf16, uses_channels_last
from trainlab.tasks.base import Task, create_task
from trainlab.training.checkpoint import (
    optimizer_from_flat,
    optimizer_to_flat,
    pack_state,
    prefixed,
    rng_state,
    set_rng_state,
    unpack_state,
    unprefixed,
)
from trainlab.training.distributed import Ranks, adopt_progress, progress_sums


class Callback:
    """Base class; override only the hooks you need. Lower `order` runs first."""

    order: int = 0

    def state_dict(self) -> dict[str, Any]:
        """What this callback must carry across a resume: JSON-able values and tensors, nested in dicts
        and lists. The trainer saves it in every checkpoint under the callback's own key."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_train_batch_begin(self, trainer: Trainer, step: int) -> None: ...

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None: ...

    def on_validation_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None: ...


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        task: Task | None = None,
        schedule: Callable[[float], float] | None = None,
        transform: Transform | None = None,
        augment: Callable | None = None,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        tta: bool | str = False,
        callbacks: Iterable[Callback] = (),
        stateful: dict[str, Any] | None = None,
        compile: bool = False,
        precision: str = "auto",
        channels_last: bool | None = None,
        device: torch.device | str = "cpu",
        ranks: Ranks | None = None,
    ):
        """`task` defaults to classification. `stateful` names objects with state_dict()/
        load_state_dict() of tensors (the loader's and the augmentation's generators) that checkpoints
        must carry for an exact resume; each callback's own state_dict() is carried too. `ranks`: this
        process's place in a distributed run (trainlab.training.distributed): the loader yields global
        batches, and the model trains on this rank's rows of each through DistributedDataParallel."""
        self.model, self.optimizer, self.epochs = model, optimizer, epochs
        self.task = task or create_task("classification")
        self.schedule, self.transform, self.augment, self.penalty = schedule, transform, augment, penalty
        self.grad_clip, self.tta = grad_clip, tta
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.device = torch.device(device)
        self.bf16 = uses_bf16(precision, self.device)  # autocast to bfloat16
        self.channels_last = uses_channels_last(channels_last, self.device)  # for the model and its inputs
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the optimizer's parameters stay the same
        self.ranks = ranks
        network = ranks.wrap(model) if ranks is not None else model
        self.forward = torch.compile(network) if compile else network  # weights stay shared with `model`
        self.ema_decay = ema_decay
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay else None
        self.averaged_model: nn.Module | None = None  # set at the end by a weight-averaging callback
        # Walking the module tree costs ~1 us per module per call: list the tensors the step touches once.
        self.params = list(model.parameters())
        if self.ema_model is not None:
            self.ema_tensors = (
                (list(self.ema_model.parameters()), self.params),
                (list(self.ema_model.buffers()), list(model.buffers())),
            )
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.steps_per_epoch = 0
        self.history: list[dict[str, float]] = []
        self.stop_training = False
        self.last_checkpoint: str | None = None  # set by whoever writes resume points
        self.stateful = stateful or {}
        self.progress: dict[str, Any] | None = None  # the epoch in flight: step, losses, sizes, sums

    # ----------------------------------------------------------------------------------------------
    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        return model_input(x, self.transform, self.channels_last)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def set_lr(self) -> float:
        factor = 1.0
        if self.schedule is not None:
            total = max(self.epochs * self.steps_per_epoch, 1)
            factor = self.schedule(min(self.global_step / total, 1.0))
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, images: torch.Tensor, targets: Any, sums: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; adds to the task's metric `sums` and returns the loss (device tensor)."""
        x = as_float01(images)
        if self.augment:
            x, targets = self.augment(x, targets)
        scale = 1.0
        if self.ranks is not None:  # augmented as one batch on every rank, so that N does not matter
            n, rows = len(x), self.ranks.rows(len(x))
            x, targets = x[rows], index_targets(targets, rows)
            # DDP averages over N ranks: a shard's mean loss weighs (its rows) * N / n, so that the
            # average is the global batch's mean even when N does not divide n
            scale = (rows.stop - rows.start) * self.ranks.world / n
        x = self.model_input(x)
        with self.autocast():
            loss, outputs = self.task.training_loss(self.forward(x), targets)
            if self.penalty is not None:
                loss = loss + self.penalty(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if scale == 1.0 else loss * scale).backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        if self.ema_model is not None:
            self.update_ema()
        self.task.accumulate(sums, outputs, targets)
        return loss.detach()

    @torch.no_grad()
    def update_ema(self) -> None:
        (ema_params, params), (ema_buffers, buffers) = self.ema_tensors
        torch._foreach_lerp_(ema_params, params, 1.0 - self.ema_decay)
        if buffers:  # batch-norm statistics are copied, not averaged
            torch._foreach_copy_(ema_buffers, buffers)

    def new_progress(self, steps: int) -> dict[str, Any]:
        return {
            "step": 0,
            "losses": torch.zeros(steps, device=self.device),  # (steps,)
            "sizes": [],  # batch sizes, known on the host without a sync
            "sums": self.task.metric_sums(self.device),
        }

    def train_epoch(self, loader: Iterable) -> dict[str, float]:
        """One pass over `loader` (or the rest of it, after a mid-epoch resume). Each step writes its loss
        into a preallocated device buffer and adds to the task's metric sums (a few small ops); the host
        reads them once, at the end of the epoch."""
        self.model.train()
        if self.progress is None:
            self.progress = self.new_progress(len(loader))
        progress = self.progress
        lr = self.set_lr()
        for images, targets in loader:
            step = progress["step"]
            for cb in self.callbacks:
                cb.on_train_batch_begin(self, step)
            lr = self.set_lr()
            if self.ranks is not None:
                self.ranks.reseed(self.global_step)
            loss = self.train_step(images, targets, progress["sums"])
            progress["losses"][step] = loss
            progress["sizes"].append(num_targets(targets))
            progress["step"] = step + 1
            self.global_step += 1
            for cb in self.callbacks:
                cb.on_train_batch_end(self, step, loss)
        self.progress = None
        if self.ranks is not None:
            self.ranks.reduce_progress(progress)
            self.ranks.broadcast_buffers(self.model, self.ema_model)
        steps = progress["step"]
        losses, sizes = progress["losses"][:steps], progress["sizes"]
        finite = torch.isfinite(losses).tolist()
        if not all(finite):
            bad_step = self.global_step - steps + finite.index(False)
            raise TrainingDiverged(
                f"loss became non-finite at step {bad_step} (epoch {self.epoch + 1}); "
                f"last good checkpoint: {self.last_checkpoint or 'none written yet'}"
            )
        count = max(sum(sizes), 1)
        weights = torch.tensor(sizes, dtype=losses.dtype, device=self.device)
        logs = {"train_loss": float((losses * weights).sum()) / count}
        logs.update({f"train_{k}": float(v) / count for k, v in progress_sums(progress).items()})
        return {**logs, "lr": lr}

    # ----------------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        """What validation and the final evaluation use: a weight average once training has made one
        (trainlab.training.averaging), else the EMA copy when it is on, else the model."""
        if self.averaged_model is not None:
            return self.averaged_model
        return self.ema_model if self.ema_model is not None else self.model

    def predictor(self, model: nn.Module | None = None) -> Predictor:
        """The inference path that `trainlab eval` and `predict` rebuild from the run directory."""
        return Predictor(
            model or self.eval_model, self.task, self.transform, self.tta, self.bf16, self.channels_last
        )

    def predict(self, loader: Iterable, model: nn.Module | None = None) -> tuple[torch.Tensor, Any]:
        """(float32 outputs, targets) over a loader, in eval mode, with TTA when it is on."""
        return self.predictor(model).run(loader)

    def evaluate(self, loader: Iterable, model: nn.Module | None = None) -> dict[str, float]:
        return self.task.evaluate(*self.predict(loader, model))

    def warm_up(self, images: torch.Tensor, targets: Any, steps: int = 2) -> None:
        """Run the training forward and backward `steps` times on one batch of uint8 `images` (the
        training batch shape), so that torch.compile compiles before any clock starts; then put every
        weight, buffer, gradient and random state back. The run that follows is exactly the run
        without warm-up. No optimiser step, EMA update, loader or augmentation draw happens here."""
        snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        x = self.model_input(as_float01(images))
        self.model.train()
        for _ in range(steps):
            with self.autocast():
                loss, _ = self.task.training_loss(self.forward(x), targets)
            loss.backward()
        synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(snapshot)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)

    # ----------------------------------------------------------------------------------------------
    def fit(self, train_loader: Iterable, val_loader: Iterable | None = None) -> list[dict[str, float]]:
        self.steps_per_epoch = len(train_loader)
        # stop_training is not reset: a resumed run that had stopped early has ended
        for cb in self.callbacks:
            cb.on_train_begin(self)
        while self.epoch < self.epochs and not self.stop_training:
            for cb in self.callbacks:
                cb.on_epoch_begin(self, self.epoch + 1)
            synchronize(self.device)
            start = time.perf_counter()
            logs = {"epoch": self.epoch + 1, **self.train_epoch(train_loader)}
            if val_loader is not None and len(val_loader):
                logs.update({f"val_{k}": v for k, v in self.evaluate(val_loader).items()})
            synchronize(self.device)
            logs["seconds"] = time.perf_counter() - start
            self.epoch += 1
            self.history.append(logs)
            if f"val_{self.task.monitor}" in logs:
                for cb in self.callbacks:
                    cb.on_validation_end(self, self.epoch, logs)
            for cb in self.callbacks:
                cb.on_epoch_end(self, self.epoch, logs)
        final = {"epochs_run": self.epoch, "history": self.history}
        for cb in self.callbacks:
            cb.on_train_end(self, final)
        return self.history

    # ----------------------------------------------------------------------------------------------
    def callback_keys(self) -> dict[str, Callback]:
        """Each callback under a stable key (its class name, numbered when a class appears twice)."""
        keys: dict[str, Callback] = {}
        for cb in self.callbacks:
            name = type(cb).__qualname__
            key, n = name, 1
            while key in keys:
                n += 1
                key = f"{name}#{n}"
            keys[key] = cb
        return keys

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON meta): everything a resume needs, mid-epoch included: weights, optimizer
        buffers, RNG and generator states, the epoch in flight, and each callback's state_dict(). In a
        distributed run every rank must call it (it all-reduces the epoch in flight)."""
        if self.ranks is not None and self.progress is not None:
            self.ranks.reduce_progress(self.progress)
        tensors = prefixed("model", self.model.state_dict())
        optim_tensors, optim_meta = optimizer_to_flat(self.optimizer)
        tensors.update(prefixed("optim", optim_tensors))
        tensors.update(prefixed("rng", rng_state()))
        if self.ema_model is not None:
            tensors.update(prefixed("ema", self.ema_model.state_dict()))
        for name, obj in self.stateful.items():
            tensors.update(prefixed(name, obj.state_dict()))
        callbacks = {key: cb.state_dict() for key, cb in self.callback_keys().items()}
        callback_tensors, callback_meta = pack_state({k: v for k, v in callbacks.items() if v}, "callbacks")
        progress_tensors, progress_meta = pack_state(self.progress or {}, "progress")
        meta = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "stop_training": self.stop_training,
            "history": self.history,
            "last_checkpoint": self.last_checkpoint,
            "optim": optim_meta,
            "callbacks": callback_meta,
            "progress": progress_meta if self.progress else None,
        }
        return {**tensors, **callback_tensors, **progress_tensors}, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model.load_state_dict(unprefixed("model", tensors))
        optim_tensors = {k: v.to(self.device) for k, v in unprefixed("optim", tensors).items()}
        optimizer_from_flat(self.optimizer, optim_tensors, meta["optim"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(unprefixed("ema", tensors))
        set_rng_state(unprefixed("rng", tensors))
        for name, obj in self.stateful.items():
            obj.load_state_dict(unprefixed(name, tensors))
        callbacks = unpack_state(meta["callbacks"], tensors, self.device)
        for key, cb in self.callback_keys().items():
            if key in callbacks:
                cb.load_state_dict(callbacks[key])
        self.progress = None
        if meta["progress"] is not None:
            self.progress = unpack_state(meta["progress"], tensors, self.device)
            if self.ranks is not None:
                adopt_progress(self.progress)
        self.epoch, self.global_step = meta["epoch"], meta["global_step"]
        self.stop_training = bool(meta.get("stop_training", False))  # older checkpoints: not stopped
        self.history, self.last_checkpoint = meta["history"], meta["last_checkpoint"]
