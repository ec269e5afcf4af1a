"""Optimisers of the NumPy engine: `opt = SGD(model.params, lr=0.1); opt.step(grads)`.

Each keeps the params dict (not copies) and updates its arrays in place, in their own dtype. With g the
gradient, the updates are the lectures' (cs231n lecture 7) and torch.optim's, step for step:

    SGD        w -= lr g
    Momentum   v = mu v + g;  w -= lr v                         (Polyak 1964)
    Nesterov   v = mu v + g;  w -= lr (g + mu v)                (Nesterov 1983; Sutskever et al. 2013:
                                                                 the gradient at the look-ahead point,
                                                                 after a change of variables)
    Adam       m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) g^2;
               w -= lr (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)   (Kingma & Ba 2015)

Buffers start at zero on the first step, in the parameter's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainlab.errors import ConfigError
from trainlab.registry import Registry

OPTIMIZERS = Registry("optimizer")


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value < high:
        raise ConfigError(f"{name}={value} is not valid (expected {low} <= {name} < {high})")


class Optimizer:
    def __init__(self, params: dict[str, np.ndarray], lr: float):
        check_range("lr", lr, 0.0, math.inf)
        self.params, self.lr = params, lr
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def buffer(self, name: str, key: str) -> np.ndarray:
        """The zero-initialised buffer `key` of parameter `name`."""
        slots = self.state.setdefault(name, {})
        if key not in slots:
            slots[key] = np.zeros_like(self.params[name])
        return slots[key]

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for name, g in grads.items():
            self.update(name, self.params[name], g)

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        w -= self.lr * g


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.9):
        super().__init__(params, lr)
        check_range("momentum", momentum, 0.0, 1.0)
        self.momentum = momentum

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        v = self.buffer(name, "velocity")
        v *= self.momentum
        v += g
        w -= self.lr * v


@OPTIMIZERS.register("nesterov")
class Nesterov(Momentum):
    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        v = self.buffer(name, "velocity")
        v *= self.momentum
        v += g
        w -= self.lr * (g + self.momentum * v)


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, lr)
        check_range("betas[0]", betas[0], 0.0, 1.0)
        check_range("betas[1]", betas[1], 0.0, 1.0)
        self.betas, self.eps, self.t = betas, eps, 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        super().step(grads)

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        m, s = self.buffer(name, "m"), self.buffer(name, "s")
        m *= b1
        m += (1 - b1) * g
        s *= b2
        s += (1 - b2) * np.square(g)
        denom = np.sqrt(s)
        denom /= math.sqrt(1 - b2**self.t)
        denom += self.eps
        w -= (self.lr / (1 - b1**self.t)) * m / denom


def create_optimizer(name: str, params: dict[str, np.ndarray], **options: Any) -> Optimizer:
    """An optimiser by name ("sgd", "momentum", "nesterov", "adam") over `params`, with its options."""
    cls = OPTIMIZERS.get(name)
    try:
        return cls(params, **options)
    except TypeError as e:
        raise ConfigError(f"bad options {options} for optimizer {name!r}: {e}") from None
