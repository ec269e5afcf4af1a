"""Activation functions, registered by name.

(Skeleton: issue 3 adds the full family, closed-form derivatives and metadata.)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainlab.registry import Registry

ACTIVATIONS = Registry("activation")

ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("identity")(nn.Identity)


def create_activation(act: str | dict[str, Any] | nn.Module, **options: Any) -> nn.Module:
    """Build an activation from a name ("relu"), a config ({"name": "elu", "alpha": 1.0}) or a module."""
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, dict):
        options = {**{k: v for k, v in act.items() if k != "name"}, **options}
        act = act["name"]
    return ACTIVATIONS.create(act, **options)


def list_activations() -> list[str]:
    return ACTIVATIONS.list()
