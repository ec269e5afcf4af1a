"""Gradient flow and update sizes per layer, as a callback.

Every `every` steps, for each weight tensor (parameters with 2 or more dimensions: Linear and Conv):
the gradient norm ||dL/dW||, the weight norm ||W||, and the update/weight ratio ||W_after - W_before|| /
||W_before||, measured from the weights themselves so it holds for any optimiser. The lectures' rule of
thumb: the ratio should be around 1e-3; much larger and the learning rate is too high, much smaller
and it is too low. Rows go into a fixed-size device buffer; nothing is read on the host until the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainlab.diagnose.buffer import SampleBuffer
from trainlab.training.callbacks import Callback

if TYPE_CHECKING:
    from trainlab.training.trainer import Trainer

STATS = ("grad_norm", "weight_norm", "update_ratio")


def weight_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]


class GradientStats(Callback):
    order = 31

    def __init__(self, every: int = 10, capacity: int = 64, out=None):
        self.every, self.capacity, self.out = every, capacity, out
        self.params: list[tuple[str, nn.Parameter]] = []
        self.snapshot: list[torch.Tensor] = []
        self.due_now = False

    def attach(self, model: nn.Module) -> GradientStats:
        self.params = weight_parameters(model)
        self.snapshot = [p.detach().clone() for _, p in self.params]  # allocated once, reused
        self.buffer = SampleBuffer(self.capacity, self.every)
        return self

    def on_train_begin(self, trainer: Trainer) -> None:
        self.attach(trainer.model)

    def on_train_batch_begin(self, trainer: Trainer, step: int) -> None:
        self.due_now = bool(self.params) and self.buffer.due(trainer.global_step)
        if self.due_now:
            torch._foreach_copy_(self.snapshot, [p.detach() for _, p in self.params])

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.due_now:
            self.measure(trainer.global_step - 1)
        self.due_now = False

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """Record the current gradients and the update since the snapshot."""
        weights = [p.detach() for _, p in self.params]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.params]
        grad_norm = torch.stack(torch._foreach_norm(grads))
        before_norm = torch.stack(torch._foreach_norm(self.snapshot))
        update_norm = torch.stack(torch._foreach_norm(torch._foreach_sub(weights, self.snapshot)))
        weight_norm = torch.stack(torch._foreach_norm(weights))
        ratio = update_norm / before_norm.clamp_min(1e-12)
        self.buffer.write(step, torch.stack([grad_norm, weight_norm, ratio], 1).float())  # (P, 3)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.out is not None and self.params:
            from trainlab.diagnose.figures import write_gradient_report

            write_gradient_report(self, self.out)

    def history(self) -> dict[str, Any]:
        """{"steps": [...], "params": [...], stat: (T, P) tensor for each of STATS}."""
        steps, rows = self.buffer.read()
        result: dict[str, Any] = {"steps": steps, "params": [name for name, _ in self.params]}
        for i, stat in enumerate(STATS):
            result[stat] = rows[..., i] if len(steps) else torch.zeros(0, len(self.params))
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        """Per weight tensor: the mean of each statistic over the recorded steps."""
        h = self.history()
        if not h["steps"]:
            return {}
        return {
            name: {stat: float(h[stat][:, i].mean()) for stat in STATS} for i, name in enumerate(h["params"])
        }
