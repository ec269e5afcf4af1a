"""Regularisation: dropout (Srivastava et al. 2014) and weight penalties R(W) added to the loss.

Dropout keeps each unit with probability 1 - p. Its expected output must be the same in training and at
test time, so one side is rescaled:

    inverted (default):   train  h * m / (1 - p),   test  h             (nothing to do at test time)
    test-time scaling:    train  h * m,             test  h * (1 - p)   (the lectures' first version)

with m ~ Bernoulli(1 - p). Models choose between them with their `dropout_mode` option, "inverted" or
"test_scale" (`create_dropout`). Channel dropout (Tompson et al. 2015) drops whole feature maps, since
neighbouring pixels of one map are too correlated for pixel-wise dropout to regularise a conv.

Penalties, as the lectures write them, with loss = data loss + strength * R(W):

    l2            R(W) = sum W^2
    l1            R(W) = sum |W|
    elastic_net   R(W) = sum beta * W^2 + |W|

By default they apply to weights (tensors with 2 or more dims), not to biases or norm gamma / beta.
Under SGD, L2 in the loss is weight decay: the gradient 2 * strength * W shrinks W by lr * 2 * strength
per step. Under Adam it is not: the penalty's gradient is divided by sqrt(v) like every other gradient,
so weights with large gradients are barely regularised. Decoupled weight decay (AdamW, Loshchilov &
Hutter 2019) shrinks W by lr * weight_decay * W outside the adaptive step; use `torch.optim.AdamW`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.registry import Registry, suggest


class Dropout(nn.Module):
    """Dropout with drop probability p; `scale_at` "train" (inverted) or "test"; `per_channel` drops whole
    channels of (N, C, *spatial) inputs."""

    def __init__(self, p: float = 0.5, scale_at: str = "train", per_channel: bool = False):
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"dropout p={p} is not valid (expected 0 <= p < 1, the drop probability)")
        if scale_at not in ("train", "test"):
            raise ConfigError(f"dropout scale_at={scale_at!r} is not valid (expected 'train' or 'test')")
        self.p, self.scale_at, self.per_channel = p, scale_at, per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = 1 - self.p
        if not self.training:
            return x * keep if self.scale_at == "test" else x
        if self.p == 0:
            return x
        shape = x.shape[:2] + (1,) * (x.dim() - 2) if self.per_channel else x.shape  # (N, C, 1, 1) or all
        mask = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * (mask / keep if self.scale_at == "train" else mask)

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_at={self.scale_at!r}, per_channel={self.per_channel}"


def channel_dropout(p: float = 0.5, scale_at: str = "train") -> Dropout:
    """Dropout of whole feature maps, for convolutional layers."""
    return Dropout(p, scale_at, per_channel=True)


DROPOUT_MODES = {"inverted": "train", "test_scale": "test"}  # a model's dropout_mode -> Dropout's scale_at


def create_dropout(p: float, mode: str = "inverted") -> Dropout:
    """The Dropout a model builds for its `dropout_mode` option: "inverted" scales by 1 / (1 - p) in
    training, "test_scale" multiplies by 1 - p at test time."""
    if mode not in DROPOUT_MODES:
        allowed = ", ".join(map(repr, DROPOUT_MODES))
        raise ConfigError(f"model.dropout_mode={mode!r} is not valid (expected one of {allowed})")
    return Dropout(p, DROPOUT_MODES[mode])


PENALTIES = Registry("penalty")


class Penalty:
    """`penalty(model)` = strength * sum over the selected parameters of R(W)."""

    def __init__(self, name: str, strength: float, weights_only: bool = True, **options: Any):
        if strength < 0:
            raise ConfigError(f"penalty strength={strength} is not valid (expected >= 0)")
        self.name, self.strength, self.weights_only, self.options = name, strength, weights_only, options
        self.regularizer = PENALTIES.get(name)

    def parameters(self, model: nn.Module) -> list[torch.Tensor]:
        return [p for p in model.parameters() if p.requires_grad and (p.dim() >= 2 or not self.weights_only)]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = self.parameters(model)
        if self.strength == 0 or not params:
            return torch.zeros((), device=next(model.parameters()).device)
        return self.strength * torch.stack([self.regularizer(p, **self.options) for p in params]).sum()

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strength": self.strength,
            "weights_only": self.weights_only,
            **self.options,
        }


@PENALTIES.register("none")
def no_penalty(w: torch.Tensor) -> torch.Tensor:
    return w.new_zeros(())


@PENALTIES.register("l2")
def l2(w: torch.Tensor) -> torch.Tensor:
    """R(W) = sum W^2 (no 1/2: the gradient is 2W)."""
    return w.square().sum()


@PENALTIES.register("l1")
def l1(w: torch.Tensor) -> torch.Tensor:
    """R(W) = sum |W|: drives weights to exactly 0 (sparse)."""
    return w.abs().sum()


@PENALTIES.register("elastic_net", aliases=("l1_l2",))
def elastic_net(w: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """R(W) = sum beta * W^2 + |W| (Zou & Hastie 2005)."""
    return (beta * w.square() + w.abs()).sum()


def create_penalty(name: str, strength: float = 0.0, **options: Any) -> Penalty:
    """A callable `penalty(model) -> scalar` that the trainer adds to the loss.

    Options: `weights_only` (default True: skip biases and norm parameters) and, for elastic_net, `beta`.
    """
    name = PENALTIES.canonical(name)
    accepted = [p for p in inspect.signature(PENALTIES.get(name)).parameters if p != "w"] + ["weights_only"]
    for key in options:
        if key not in accepted:
            raise ConfigError(suggest(key, accepted, f"option for penalty {name!r}:"))
    return Penalty(name, strength, **options)


def list_penalties() -> list[str]:
    return PENALTIES.list()
