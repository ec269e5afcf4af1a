"""Per-layer activation statistics during training, as a callback.

For every activation layer (ReLU, tanh, ... in the model), every `every` steps: mean, std, share of
values near zero (|a| < `near_zero`), share saturated (sigmoid: a < 0.01 or a > 0.99; tanh: |a| > 0.99),
and share of dead units (ReLU family: pre-activation never > 0 over the last `dead_window` recorded
batches), plus a random sample of values for histograms over time on the real range, negatives included.

Everything is computed on the device inside forward hooks and written into fixed-size buffers
(diagnose.buffer.SampleBuffer), so memory is bounded and no step waits for the host.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainlab.diagnose.buffer import SampleBuffer
from trainlab.training.callbacks import Callback

if TYPE_CHECKING:
    from trainlab.training.trainer import Trainer

STATS = ("mean", "std", "near_zero", "saturated", "dead")
DEAD_KINDS = {"relu", "relu6", "leaky_relu", "prelu"}  # units that stop when the input stays <= 0
SATURATING = {"sigmoid", "tanh"}
TORCH_KINDS = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ELU: "elu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Softplus: "softplus",
}


def activation_kind(module: nn.Module) -> str | None:
    """The registered activation name of `module`, or None when it is not an activation layer."""
    from trainlab.nn.activations import ACTIVATIONS

    for name in ACTIVATIONS.list():
        if type(module) is ACTIVATIONS.get(name):
            return name
    return TORCH_KINDS.get(type(module))


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(qualified name, module, kind) of every activation layer, in forward-definition order."""
    found = []
    for name, module in model.named_modules():
        kind = activation_kind(module)
        if kind is not None:
            found.append((name, module, kind))
    return found


def saturated_share(a: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "sigmoid":
        return ((a < 0.01) | (a > 0.99)).float().mean()
    if kind == "tanh":
        return (a.abs() > 0.99).float().mean()
    return torch.full((), math.nan, device=a.device)


def units_active(pre: torch.Tensor) -> torch.Tensor:
    """(units,) bool: whether each unit (dim 1: feature or channel) had a positive input in the batch."""
    return (pre > 0).transpose(0, 1).reshape(pre.shape[1], -1).any(1)


class ActivationStats(Callback):
    order = 30

    def __init__(
        self,
        every: int = 10,
        capacity: int = 64,
        sample: int = 2048,
        dead_window: int = 8,
        near_zero: float = 1e-2,
        out=None,
        seed: int = 0,
    ):
        self.every, self.capacity, self.sample = every, capacity, sample
        self.dead_window, self.near_zero, self.out, self.seed = dead_window, near_zero, out, seed
        self.layers: list[tuple[str, nn.Module, str]] = []
        self.handles: list[Any] = []
        self.recording = False

    # -- hooks -----------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> ActivationStats:
        """Hook `model`'s activation layers (on_train_begin does this for a Trainer)."""
        self.detach()
        self.layers = activation_layers(model)
        self.stats = SampleBuffer(self.capacity, self.every)
        self.values = SampleBuffer(self.capacity, self.every)
        self.rows: list[torch.Tensor | None] = [None] * len(self.layers)
        self.samples: list[torch.Tensor | None] = [None] * len(self.layers)
        self.active: list[torch.Tensor | None] = [None] * len(self.layers)  # (dead_window, units) bool
        self.records = 0
        self.generator: torch.Generator | None = None
        for index, (_, module, kind) in enumerate(self.layers):
            self.handles.append(module.register_forward_hook(self.make_hook(index, kind)))
        return self

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def make_hook(self, index: int, kind: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self.recording and module.training:
                self.record(index, kind, inputs[0].detach(), output.detach().float())

        return hook

    def record(self, index: int, kind: str, pre: torch.Tensor, a: torch.Tensor) -> None:
        dead = torch.full((), math.nan, device=a.device)
        if kind in DEAD_KINDS:
            if self.active[index] is None:
                self.active[index] = torch.ones(
                    self.dead_window, a.shape[1], dtype=torch.bool, device=a.device
                )
            self.active[index][self.records % self.dead_window] = units_active(pre)
            dead = (~self.active[index].any(0)).float().mean()
        self.rows[index] = torch.stack(
            [a.mean(), a.std(), (a.abs() < self.near_zero).float().mean(), saturated_share(a, kind), dead]
        )
        if self.generator is None:
            self.generator = torch.Generator(device=a.device).manual_seed(self.seed)
        flat = a.reshape(-1)
        self.samples[index] = flat[
            torch.randint(len(flat), (self.sample,), device=a.device, generator=self.generator)
        ]

    # -- callback --------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer) -> None:
        self.attach(trainer.model)

    def on_train_batch_begin(self, trainer: Trainer, step: int) -> None:
        self.recording = bool(self.layers) and self.stats.due(trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.recording:
            self.commit(trainer.global_step - 1)
        self.recording = False

    def commit(self, step: int) -> None:
        """Write the rows recorded by the hooks during `step` into the buffers."""
        if any(r is None for r in self.rows):  # a layer did not run (e.g. a skipped branch)
            return
        self.stats.write(step, torch.stack(self.rows))  # (L, len(STATS))
        self.values.write(step, torch.stack(self.samples))  # (L, sample)
        self.records += 1
        self.rows = [None] * len(self.layers)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.detach()
        if self.out is not None and self.layers:
            from trainlab.diagnose.figures import write_activation_report

            write_activation_report(self, self.out)

    # -- results ---------------------------------------------------------------------------------
    def history(self) -> dict[str, Any]:
        """{"steps": [...], "layers": [...], "kinds": [...], stat: (T, L) tensor for each of STATS}."""
        steps, rows = self.stats.read()
        result: dict[str, Any] = {
            "steps": steps,
            "layers": [name for name, _, _ in self.layers],
            "kinds": [kind for _, _, kind in self.layers],
        }
        for i, stat in enumerate(STATS):
            result[stat] = rows[..., i] if len(steps) else torch.zeros(0, len(self.layers))
        return result

    def histograms(self, bins: int = 60) -> list[dict[str, Any]]:
        """Per layer: counts (T, bins) over that layer's real range of sampled values, and the edges."""
        steps, values = self.values.read()
        result = []
        for index in range(len(self.layers)):
            v = values[:, index] if len(steps) else torch.zeros(0, 1)
            finite = v[torch.isfinite(v)]
            low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
            if high - low < 1e-12:
                low, high = low - 0.5, high + 0.5
            counts = torch.stack([torch.histc(row, bins, low, high) for row in v]) if len(steps) else v
            result.append({"steps": steps, "counts": counts, "edges": torch.linspace(low, high, bins + 1)})
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        """The last recorded value of each statistic, per layer."""
        h = self.history()
        if not h["steps"]:
            return {}
        return {
            f"{index}:{name}": {stat: finite_or_none(h[stat][-1, index]) for stat in STATS}
            for index, name in enumerate(h["layers"])
        }


def finite_or_none(value: torch.Tensor) -> float | None:
    """JSON has no NaN: statistics that do not apply to a layer (saturation of a ReLU) become None."""
    return round(float(value), 6) if torch.isfinite(value) else None


@torch.no_grad()
def dead_unit_fraction(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Per ReLU-family layer: the share of units whose input is never > 0 on any of the inputs `x`
    (a dead unit: its gradient is 0 for all of them, so it never learns again)."""
    layers = [(name, module) for name, module, kind in activation_layers(model) if kind in DEAD_KINDS]
    active: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, inputs, out, name=name: active.__setitem__(
                name, units_active(inputs[0]) | active.get(name, torch.zeros((), dtype=torch.bool))
            )
        )
        for name, module in layers
    ]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {name: float((~active[name]).float().mean()) for name, _ in layers}
