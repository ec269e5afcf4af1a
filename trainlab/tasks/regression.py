"""Regression: the outputs (B, D) fit real-valued targets (B, D) or (B,) by MSE or L1.

Given the class labels of a classification dataset, the targets are the one-hot class vectors: the
lectures' MSE-loss classifier, the way a network was trained before cross-entropy took over."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.tasks.base import TASKS, Task

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def as_targets(targets: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Float targets shaped like the outputs: class indices become one-hot vectors."""
    if not targets.is_floating_point():
        return F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
    return targets.reshape(outputs.shape).to(outputs.dtype)


@TASKS.register("regression")
class Regression(Task):
    """Outputs (B, D) against real-valued targets (or one-hot class vectors), by MSE or L1."""

    name = "regression"
    monitor = "loss"
    higher_is_better = False

    def __init__(self, loss: str = "mse"):
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r}: expected one of {', '.join(LOSSES)}")
        self.loss_name = loss

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        return LOSSES[self.loss_name](outputs, as_targets(targets, outputs))

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"mae": torch.zeros((), device=device)}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: torch.Tensor) -> None:
        outputs = outputs.detach().float()
        error = (outputs - as_targets(targets, outputs)).abs()
        sums["mae"] += error.mean(tuple(range(1, error.ndim))).sum() if error.ndim > 1 else error.sum()

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        if not len(targets):
            return {"loss": float("nan"), "mse": float("nan"), "mae": float("nan")}
        outputs = outputs.float()
        targets = as_targets(targets, outputs)
        return {
            "loss": float(LOSSES[self.loss_name](outputs, targets)),
            "mse": float(F.mse_loss(outputs, targets)),
            "mae": float(F.l1_loss(outputs, targets)),
        }
