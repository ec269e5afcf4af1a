"""A Task decides what a run learns and how it is judged, so that one training loop serves them all:

- the loss of the model's outputs against the targets (auxiliary heads included);
- the training metrics, summed on the device step by step and read once per epoch;
- the evaluation over a whole split (loss and metrics) and the extra report of a final evaluation;
- how outputs become predictions, and how test-time augmentation combines views.

Targets are tensors or dicts of tensors (boxes, masks), so a new kind of problem is a new Task, not a
new loop. Tasks register in TASKS: `create_task("classification", label_smoothing=0.1)`.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

from trainlab.config import Config
from trainlab.data.loader import Targets
from trainlab.errors import ConfigError
from trainlab.registry import Registry
from trainlab.tasks.tta import TTAPolicy, parse_tta

TASKS = Registry("task")
AUX_LOSS_WEIGHT = 0.3  # Szegedy et al. 2014: loss = L(main) + 0.3 * sum of the auxiliary heads' L


def split_outputs(outputs: torch.Tensor | tuple) -> tuple[torch.Tensor, tuple]:
    """(main output, auxiliary outputs): models with auxiliary heads (GoogLeNet) return
    (logits, aux1, ...) in training, the others their output alone."""
    return (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())


def concat(parts: list[Targets]) -> Targets:
    """Batches of tensors, or of dicts of tensors, joined along the first dimension."""
    if parts and isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return torch.cat(parts)


class Task:
    """The base of every task. `monitor` names the validation metric that early stopping and the best
    checkpoint watch (without the `val_` prefix); `higher_is_better` says which way is better."""

    name = "task"
    monitor = "loss"
    higher_is_better = False

    def loss(self, outputs: torch.Tensor, targets: Targets) -> torch.Tensor:
        """The training loss of one batch (a 0-d tensor)."""
        raise NotImplementedError

    def training_loss(self, raw_outputs: torch.Tensor | tuple, targets: Targets) -> tuple[torch.Tensor, Any]:
        """(loss with the auxiliary heads, main outputs)."""
        outputs, aux = split_outputs(raw_outputs)
        loss = self.loss(outputs, targets)
        for aux_outputs in aux:
            loss = loss + AUX_LOSS_WEIGHT * self.loss(aux_outputs, targets)
        return loss, outputs

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Zeroed device accumulators of the training metrics, one per name."""
        return {}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: Targets) -> None:
        """Add one batch to `sums` in place, with device ops only (no host sync)."""

    def evaluate(self, outputs: torch.Tensor, targets: Targets) -> dict[str, float]:
        """Loss and metrics over a whole split: {"loss": ..., ...}."""
        raise NotImplementedError

    def report(self, outputs: torch.Tensor, targets: Targets, classes: list[str]) -> dict[str, Any]:
        """What a final evaluation adds to the summary beyond `evaluate` (a confusion matrix, ...)."""
        return {}

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """The prediction each output stands for."""
        return outputs

    def calibration(
        self, outputs: torch.Tensor, targets: Targets, val: tuple | None = None, prefix: str = "test_"
    ) -> dict[str, float]:
        """A final evaluation's calibration metrics (trainlab.tasks.calibration), with a temperature
        fitted on `val` = (outputs, targets) of the validation split when given; {} for a task whose
        outputs are not class scores."""
        return {}

    @torch.no_grad()
    def infer(self, model: nn.Module, x: torch.Tensor, tta: bool | str | TTAPolicy = False) -> torch.Tensor:
        """The model's float32 outputs in eval mode; with a test-time augmentation policy
        (trainlab.tasks.tta: True is "flip"), the mean over its views of the input (a task whose
        outputs are images would move them back first)."""
        policy = parse_tta(tta)
        if not policy:
            return model(x).float()
        views = policy.views(x)
        outputs = model(next(views)).float()
        for view in views:
            outputs = outputs + model(view).float()
        return outputs / policy.num_views


def create_task(name: str = "classification", **options: Any) -> Task:
    """A registered task with its options; ConfigError names an option the task does not take."""
    cls = TASKS.get(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for option in options:
        if option not in accepted:
            takes = ", ".join(sorted(accepted)) or "no options"
            raise ConfigError(f"the {TASKS.canonical(name)} task has no option {option!r} (it takes {takes})")
    return cls(**options)


def task_from_config(cfg: Config) -> Task:
    """The task of a run: task.name with task.loss, and train.label_smoothing for the tasks that smooth
    labels (a recipe's smoothing does not stop it from training a regression; a warning says so)."""
    options: dict[str, Any] = {}
    if cfg.task.loss is not None:
        options["loss"] = cfg.task.loss
    if cfg.train.label_smoothing:
        if "label_smoothing" in inspect.signature(TASKS.get(cfg.task.name).__init__).parameters:
            options["label_smoothing"] = cfg.train.label_smoothing
        else:
            warnings.warn(
                f"train.label_smoothing={cfg.train.label_smoothing} is ignored: the {cfg.task.name} task "
                "has no labels to smooth",
                stacklevel=2,
            )
    return create_task(cfg.task.name, **options)


def list_tasks() -> list[str]:
    return TASKS.list()
