"""Weight averaging and snapshot ensembles, as callbacks that carry their state across a resume; and
update_bn, which recomputes batch-norm statistics after any averaging.

- SWA (Izmailov et al. 2018, Averaging Weights Leads to Wider Optima and Better Generalization): the
  weights at the end of epochs k, k+1, ..., E, averaged with equal weights: w_swa = 1/n sum_i w_i,
  kept as a running mean w_swa <- w_swa + (w - w_swa) / (n + 1). Its learning rate is
  trainlab.training.optim.swa_schedule.
- Top-k averaging (timm's avg_checkpoints): the mean of the k epochs' weights with the best
  validation metric.
- Snapshot ensembles (Huang et al. 2017): with the cyclic cosine schedule over M cycles, the model at
  the end of each cycle; the M snapshots are an ensemble.

An average of weights is not a network whose batch-norm statistics anyone measured: the running mean
and variance of the averaged model must be recomputed on the training data (update_bn), or accuracy
falls (Lightning #14866; timm's avg_checkpoints does not). The lecture (DNN & CNN deck): "train several
independent models; at test time combine their results ... instead of training independent models,
use several snapshots of one model during training".
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from trainlab.config import Config
from trainlab.data.preprocess import as_float01
from trainlab.errors import ConfigError
from trainlab.nn.norm import is_batchnorm
from trainlab.training.callbacks import monitored
from trainlab.training.optim import create_schedule, swa_schedule
from trainlab.training.trainer import Callback, Trainer


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def running_average(average: dict[str, torch.Tensor], state: dict[str, torch.Tensor], count: int) -> None:
    """average <- average + (state - average) / (count + 1) for every floating-point tensor (weights and
    batch-norm statistics, which update_bn then replaces); other tensors (step counters) are copied."""
    for key, value in state.items():
        if value.is_floating_point():
            average[key].add_(value.detach() - average[key], alpha=1.0 / (count + 1))
        else:
            average[key].copy_(value)


def averaged_model(model: nn.Module, average: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` in eval mode holding the averaged state."""
    result = copy.deepcopy(model).eval().requires_grad_(False)
    result.load_state_dict(average)
    return result


class StochasticWeightAveraging(Callback):
    """SWA: the running mean of the weights at the end of each epoch from `start` (1-based) on. At the
    end of training the trainer's `averaged_model` is the average (the run then recomputes its batch-norm
    statistics). The average and its count are this callback's state, so a run resumed mid-SWA (mid-epoch
    too) averages exactly what the uninterrupted run averages."""

    order = 30  # before the Checkpointer (90): a resume point after epoch e holds epoch e's average

    def __init__(self, start: int):
        self.start, self.count = start, 0
        self.average: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "average": self.average} if self.average is not None else {"count": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.average = state["count"], state.get("average")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if epoch < self.start:
            return
        if self.average is None:
            self.average = clone_state(trainer.model)
        else:
            running_average(self.average, trainer.model.state_dict(), self.count)
        self.count += 1
        logs["swa_models"] = self.count

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.average is not None:
            trainer.averaged_model = averaged_model(trainer.model, self.average)


class TopKAverage(Callback):
    """The mean of the weights of the k epochs with the best validation metric (ties: the earlier epoch).
    The k candidates are this callback's state."""

    order = 30

    def __init__(self, k: int):
        self.k = k
        self.kept: list[dict[str, Any]] = []  # {"score": sign * metric, "epoch": e, "state": tensors}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = list(state["kept"])

    def on_validation_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        key, sign = monitored(trainer, None)
        score = sign * logs[key]
        self.kept.append({"score": score, "epoch": epoch, "state": clone_state(trainer.model)})
        self.kept = sorted(self.kept, key=lambda c: (-c["score"], c["epoch"]))[: self.k]

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if not self.kept:
            return
        average = {k: v.clone() for k, v in self.kept[0]["state"].items()}
        for count, candidate in enumerate(self.kept[1:], start=1):
            running_average(average, candidate["state"], count)
        trainer.averaged_model = averaged_model(trainer.model, average)
        logs["averaged_epochs"] = sorted(c["epoch"] for c in self.kept)


class SnapshotEnsemble(Callback):
    """The evaluated weights at the end of each of `snapshots` equal cycles of training (Huang et al.
    2017): after the step s where floor(s M / S) steps up, S the run's total steps. The snapshots so far
    are this callback's state (tensors in the checkpoint), so a run resumed mid-cycle ends with the same
    M snapshots; the run writes them as model files at the end."""

    order = 30

    def __init__(self, snapshots: int):
        self.snapshots = snapshots
        self.taken: list[dict[str, Any]] = []  # {"step": s, "epoch": e, "state": tensors}

    def state_dict(self) -> dict[str, Any]:
        return {"taken": self.taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.taken = list(state["taken"])

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        s, total = trainer.global_step, max(trainer.epochs * trainer.steps_per_epoch, 1)
        if s * self.snapshots // total > (s - 1) * self.snapshots // total:  # host ints: no sync
            self.taken.append(
                {"step": s, "epoch": trainer.epoch + 1, "state": clone_state(trainer.eval_model)}
            )


@torch.no_grad()
def update_bn(model: nn.Module, batches: Iterable[torch.Tensor], model_input: Callable) -> int:
    """Recompute every batch-norm layer's running mean and (unbiased) variance over `batches` of uint8
    training images, through `model_input` (the run's preprocessing), as exact full-data statistics.

    The model runs in train mode, as torch.optim.swa_utils.update_bn does, so each layer sees inputs
    normalised the way training normalised them; but where torch (momentum=None) averages the per-batch
    variances, which misses the variance of the batch means (about var / batch_size), this sums x and
    x^2 per channel in float64 over every image: mean = S1 / n, var = (S2 - n mean^2) / (n - 1). The
    model's mode and each layer's batch count are put back. Returns the number of images seen."""
    layers = [m for m in model.modules() if is_batchnorm(m) and m.running_mean is not None]
    if not layers:
        return 0
    sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for m in layers}  # count, sum x, sum x^2

    def record(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().double()
        dims = [d for d in range(x.ndim) if d != 1]  # every dim but channels
        entry = sums[module]
        entry[0] += x.numel() // x.shape[1]
        entry[1] = entry[1] + x.sum(dims)
        entry[2] = entry[2] + x.square().sum(dims)

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    tracked = [m.num_batches_tracked.clone() for m in layers]  # a train-mode forward counts batches
    was_training, images = model.training, 0
    model.train()
    try:
        for batch in batches:
            model(model_input(batch))
            images += len(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for m, count in zip(layers, tracked):
        m.num_batches_tracked.copy_(count)
    for m, (n, s1, s2) in sums.items():
        if n < 2:
            continue
        mean = s1 / n
        m.running_mean.copy_(mean)
        m.running_var.copy_((s2 - n * mean.square()).clamp_min(0) / (n - 1))
    return images


def image_batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    """uint8 images (N, C, H, W) in order, `batch_size` at a time, as float in [0, 1]."""
    for start in range(0, len(images), batch_size):
        yield as_float01(images[start : start + batch_size])


def averaging_methods(cfg: Config) -> list[str]:
    """The weight-averaging (or snapshot) settings that are on, as `key=value`."""
    train = cfg.train
    on = {
        "train.ema": train.ema,
        "train.swa_start": train.swa_start,
        "train.average_top_k": train.average_top_k,
    }
    on["ensemble.snapshots"] = cfg.ensemble.snapshots or None
    return [f"{k}={v}" for k, v in on.items() if v is not None]


def check_averaging(cfg: Config) -> None:
    """One method at a time, and settings that fit the run; one ConfigError line otherwise."""
    methods, train = averaging_methods(cfg), cfg.train
    if len(methods) > 1:
        raise ConfigError(f"{' and '.join(methods)}: each makes the evaluated model; choose one")
    if train.swa_lr is not None and train.swa_start is None:
        raise ConfigError(f"train.swa_lr={train.swa_lr}: set train.swa_start=K too (the epoch SWA begins)")
    if train.swa_start is not None and train.swa_start > train.epochs:
        raise ConfigError(
            f"train.swa_start={train.swa_start}: after the last epoch; expected 1 to "
            f"train.epochs={train.epochs}"
        )
    if train.average_top_k is not None and cfg.data.val_size == 0:
        raise ConfigError(
            f"train.average_top_k={train.average_top_k} ranks epochs by the validation metric, but "
            "data.val_size=0 leaves no validation split"
        )
    snapshots, schedule = cfg.ensemble.snapshots, cfg.schedule
    if snapshots and cfg.ensemble.members > 1:
        raise ConfigError(
            f"ensemble.snapshots={snapshots} and ensemble.members={cfg.ensemble.members}: a snapshot "
            "ensemble is one model's trajectory; choose one"
        )
    if snapshots and schedule.name != "cyclic_cosine":
        raise ConfigError(
            f"ensemble.snapshots={snapshots} takes a snapshot at the end of each learning-rate cycle: "
            f"expected schedule.name=cyclic_cosine (or --recipe snapshot), got {schedule.name!r}"
        )
    if snapshots and schedule.cycles not in (None, snapshots):
        raise ConfigError(
            f"ensemble.snapshots={snapshots} but schedule.cycles={schedule.cycles}: expected the same number "
            "(or leave schedule.cycles unset)"
        )


def run_schedule(cfg: Config) -> Callable[[float], float]:
    """The run's learning-rate factor: the schedule section's, with as many cycles as snapshots when
    cyclic_cosine leaves them unset, and SWA's learning rate from train.swa_start on."""
    schedule = cfg.schedule
    if cfg.ensemble.snapshots and schedule.cycles is None:
        schedule = dataclasses.replace(schedule, cycles=cfg.ensemble.snapshots)
    train = cfg.train
    base = create_schedule(schedule, train.epochs)
    factor = train.swa_lr / cfg.optim.lr if train.swa_start and train.swa_lr else None
    return swa_schedule(base, train.epochs, train.swa_start or 1, factor, train.swa_anneal)


def averaging_callbacks(cfg: Config) -> list[Callback]:
    train = cfg.train
    if train.swa_start is not None:
        return [StochasticWeightAveraging(train.swa_start)]
    if train.average_top_k is not None:
        return [TopKAverage(train.average_top_k)]
    if cfg.ensemble.snapshots:
        return [SnapshotEnsemble(cfg.ensemble.snapshots)]
    return []


def recomputes_bn(cfg: Config) -> bool:
    """Whether the run recomputes batch-norm statistics at the end: after any weight average."""
    train = cfg.train
    return train.update_bn and any(v is not None for v in (train.ema, train.swa_start, train.average_top_k))
