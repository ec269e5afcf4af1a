"""The Trainer: one loop for every run, with the lecture's switches plugged in.

    trainer = Trainer(model, optimizer, schedule=factor, epochs=5, transform=standardizer)
    history = trainer.fit(train_loader, val_loader)

Per step: uint8 batch -> float [0, 1] -> augment (may return soft targets) -> preprocess -> forward
(bf16 autocast on CUDA) -> loss (+ penalty) -> backward -> clip -> step. Loss sums, correct counts
and the first non-finite step accumulate in device tensors; the host reads them once per epoch, so
there is no host-device sync per step.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from trainlab.data.preprocess import as_float01
from trainlab.errors import ConfigError, TrainlabError
from trainlab.train.callbacks import Callback
from trainlab.train.losses import cross_entropy, hard_labels

Transform = Callable[[torch.Tensor], torch.Tensor]
AUX_LOSS_WEIGHT = 0.3  # Szegedy et al. 2014: loss = CE(logits) + 0.3 * sum of the auxiliary heads' CE


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock reading charges it to the right phase."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def split_outputs(outputs: torch.Tensor | tuple) -> tuple[torch.Tensor, tuple]:
    """(logits, auxiliary logits): models with auxiliary classifiers (GoogLeNet) return
    (logits, aux1, ...) in training, the others their logits alone."""
    return (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        schedule: Callable[[float], float] | None = None,
        transform: Transform | None = None,
        augment: Callable | None = None,
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
        label_smoothing: float = 0.0,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        tta: bool = False,
        callbacks: Iterable[Callback] = (),
        stateful: dict[str, Any] | None = None,
        compile: bool = False,
        precision: str = "auto",
        channels_last: bool | None = None,
        device: torch.device | str = "cpu",
    ):
        """`stateful` names objects with state_dict()/load_state_dict() of tensors (the loader's and the
        augmentation's generators) that checkpoints must carry for an exact resume."""
        self.model, self.optimizer, self.epochs = model, optimizer, epochs
        self.schedule, self.transform, self.augment, self.penalty = schedule, transform, augment, penalty
        self.label_smoothing, self.grad_clip, self.tta = label_smoothing, grad_clip, tta
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision={precision!r}: expected auto, fp32 or bf16")
        self.bf16 = precision == "bf16" or (precision == "auto" and cuda)  # autocast to bfloat16
        self.channels_last = cuda if channels_last is None else channels_last  # for the model and its inputs
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the optimizer's parameters stay the same
        self.forward = torch.compile(model) if compile else model  # weights stay shared with `model`
        self.ema_decay = ema_decay
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay else None
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
        self.extra_state: dict[str, Any] = {}  # callbacks keep resumable state here (best metric, ...)
        self.stateful = stateful or {}

    # ----------------------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float in [0, 1]."""
        return as_float01(images)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform(x) if self.transform else x
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

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

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (loss, correct count) as device tensors."""
        x, targets = self.prepare(images), labels
        if self.augment:
            x, targets = self.augment(x, labels)
        x = self.model_input(x)
        with self.autocast():
            logits, aux = split_outputs(self.forward(x))
            loss = cross_entropy(logits, targets, self.label_smoothing)
            for aux_logits in aux:
                loss = loss + AUX_LOSS_WEIGHT * cross_entropy(aux_logits, targets, self.label_smoothing)
            if self.penalty is not None:
                loss = loss + self.penalty(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        if self.ema_model is not None:
            self.update_ema()
        correct = (logits.detach().argmax(1) == hard_labels(targets)).sum()
        return loss.detach(), correct

    @torch.no_grad()
    def update_ema(self) -> None:
        (ema_params, params), (ema_buffers, buffers) = self.ema_tensors
        torch._foreach_lerp_(ema_params, params, 1.0 - self.ema_decay)
        if buffers:  # batch-norm statistics are copied, not averaged
            torch._foreach_copy_(ema_buffers, buffers)

    def train_epoch(self, loader: Iterable) -> dict[str, float]:
        """One pass over `loader`. Each step writes its loss and correct count into preallocated device
        buffers (one small op each); the host reads them once, at the end of the epoch."""
        self.model.train()
        losses = torch.zeros(len(loader), device=self.device)  # (steps,)
        corrects = torch.zeros(len(loader), dtype=torch.long, device=self.device)
        sizes = []
        lr = self.set_lr()
        for step, (images, labels) in enumerate(loader):
            for cb in self.callbacks:
                cb.on_train_batch_begin(self, step)
            lr = self.set_lr()
            loss, correct = self.train_step(images, labels)
            losses[step] = loss
            corrects[step] = correct
            sizes.append(len(labels))
            self.global_step += 1
            for cb in self.callbacks:
                cb.on_train_batch_end(self, step, loss)
        finite = torch.isfinite(losses[: len(sizes)]).tolist()
        if not all(finite):
            bad_step = self.global_step - len(sizes) + finite.index(False)
            last_good = self.extra_state.get("last_checkpoint", "none written yet")
            raise TrainingDiverged(
                f"loss became non-finite at step {bad_step} (epoch {self.epoch + 1}); "
                f"last good checkpoint: {last_good}"
            )
        count = max(sum(sizes), 1)
        weights = torch.tensor(sizes, dtype=losses.dtype, device=self.device)
        return {
            "train_loss": float((losses[: len(sizes)] * weights).sum()) / count,
            "train_accuracy": int(corrects.sum()) / count,
            "lr": lr,
        }

    @torch.no_grad()
    def predict_logits(
        self, loader: Iterable, model: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, K) float32, labels (N,)) over a loader, in eval mode; with TTA, the mean over the
        image and its horizontal mirror."""
        model = model or self.eval_model
        was_training = model.training
        model.eval()
        all_logits, all_labels = [], []
        for images, labels in loader:
            x = self.model_input(self.prepare(images))
            with self.autocast():
                logits = model(x).float()
                if self.tta:
                    logits = 0.5 * (logits + model(x.flip(-1)).float())
            all_logits.append(logits)
            all_labels.append(labels)
        model.train(was_training)
        return torch.cat(all_logits), torch.cat(all_labels)

    def evaluate(self, loader: Iterable, model: nn.Module | None = None) -> dict[str, float]:
        logits, labels = self.predict_logits(loader, model)
        loss = cross_entropy(logits, labels)
        return {"loss": float(loss), "accuracy": float((logits.argmax(1) == labels).float().mean())}

    @property
    def eval_model(self) -> nn.Module:
        return self.ema_model if self.ema_model is not None else self.model

    def warm_up(self, images: torch.Tensor, steps: int = 2) -> None:
        """Run the training forward and backward `steps` times on one batch of uint8 `images` (the
        training batch shape), so that torch.compile compiles before any clock starts; then put every
        weight, buffer, gradient and random state back. The run that follows is exactly the run
        without warm-up. No optimiser step, EMA update, loader or augmentation draw happens here."""
        snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        x = self.model_input(self.prepare(images))
        labels = torch.zeros(len(images), dtype=torch.long, device=x.device)
        self.model.train()
        for _ in range(steps):
            with self.autocast():
                loss = cross_entropy(split_outputs(self.forward(x))[0], labels)
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
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_train_begin(self)
        while self.epoch < self.epochs and not self.stop_training:
            for cb in self.callbacks:
                cb.on_epoch_begin(self, self.epoch + 1)
            synchronize(self.device)
            start = time.perf_counter()
            logs = {"epoch": self.epoch + 1, **self.train_epoch(train_loader)}
            if val_loader is not None and len(val_loader):
                val = self.evaluate(val_loader)
                logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            synchronize(self.device)
            logs["seconds"] = time.perf_counter() - start
            self.epoch += 1
            self.history.append(logs)
            if "val_loss" in logs:
                for cb in self.callbacks:
                    cb.on_validation_end(self, self.epoch, logs)
            for cb in self.callbacks:
                cb.on_epoch_end(self, self.epoch, logs)
        final = {"epochs_run": self.epoch, "history": self.history}
        for cb in self.callbacks:
            cb.on_train_end(self, final)
        return self.history

    # ----------------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to resume: weights, optimizer buffers, RNG and generator states."""
        from trainlab.train.checkpoint import optimizer_to_flat, prefixed, rng_state

        tensors = prefixed("model", self.model.state_dict())
        optim_tensors, _ = optimizer_to_flat(self.optimizer)
        tensors.update(prefixed("optim", optim_tensors))
        tensors.update(prefixed("rng", rng_state()))
        if self.ema_model is not None:
            tensors.update(prefixed("ema", self.ema_model.state_dict()))
        for name, obj in self.stateful.items():
            tensors.update(prefixed(name, obj.state_dict()))
        return tensors

    def state_meta(self) -> dict[str, Any]:
        from trainlab.train.checkpoint import optimizer_to_flat

        _, optim_meta = optimizer_to_flat(self.optimizer)
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history,
            "optim": optim_meta,
            "extra_state": self.extra_state,
        }

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from trainlab.train.checkpoint import optimizer_from_flat, set_rng_state, unprefixed

        self.model.load_state_dict(unprefixed("model", tensors))
        optim_tensors = {k: v.to(self.device) for k, v in unprefixed("optim", tensors).items()}
        optimizer_from_flat(self.optimizer, optim_tensors, meta["optim"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(unprefixed("ema", tensors))
        set_rng_state(unprefixed("rng", tensors))
        for name, obj in self.stateful.items():
            obj.load_state_dict(unprefixed(name, tensors))
        self.epoch, self.global_step = meta["epoch"], meta["global_step"]
        self.history = meta["history"]
        self.extra_state = meta["extra_state"]
