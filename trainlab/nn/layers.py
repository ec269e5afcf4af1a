"""Shared layer building blocks.

ResidualBlock is the protocol every residual block follows (He et al. 2015): out = act(shortcut(x) + F(x)),
where the branch F learns the residual H(x) - x. Initialisers such as Fixup (Zhang et al. 2019) find
residual branches through `branch_layers()`, without knowing the model family.

Fixup's scalars stand in for a norm's shift and scale in a residual block without normalisation: a scalar
bias b (init 0) before each conv, linear and activation in the branch, and one multiplier s (init 1) at
its end, so F(x) = s * conv(act(conv(x + b1) + b2) + b3) + b4 for two convs. At init they compute the
identity, and they let the branch learn its offset and its scale, which a zero-initialised last layer
alone learns slowly. Blocks build them only when there is no norm (`fixup_bias`), so a model with a norm
has no extra parameters and computes exactly what it did without them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainlab.nn.activations import ACTIVATIONS, create_activation
from trainlab.nn.norm import create_norm
from trainlab.nn.regularize import create_dropout


class ResidualBlock(nn.Module):
    """Base class for residual blocks. Subclasses return their branch's weight layers, in order."""

    def branch_layers(self) -> list[nn.Module]:
        """The conv / linear layers along the residual branch F, input side first."""
        raise NotImplementedError


def layer_norm_act(layer: nn.Module, norm: nn.Module, act: str | dict) -> list[nn.Module]:
    """[layer, norm, activation], or [Maxout(layer), norm] for activations that wrap their layer
    (maxout computes k copies of the layer and takes their max, so it replaces layer and activation)."""
    name = act["name"] if isinstance(act, dict) else act
    if ACTIVATIONS.meta(name).get("wraps_layer"):
        options = {k: v for k, v in act.items() if k != "name"} if isinstance(act, dict) else {}
        return [create_activation(name, layer=layer, **options), norm]
    return [layer, norm, create_activation(act)]


def has_bias(norm: Any) -> bool:
    """A layer followed by a normalisation needs no bias: the norm's shift replaces it."""
    return norm in (None, "none")


class ScalarBias(nn.Module):
    """x + b for one learnable scalar b, init 0 (Fixup)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class ScalarMultiplier(nn.Module):
    """s * x for one learnable scalar s, init 1 (Fixup)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


def fixup_bias(norm: Any) -> nn.Module:
    """Fixup's scalar bias where there is no norm; with a norm, the identity (no parameters, same output)."""
    return ScalarBias() if has_bias(norm) else nn.Identity()


def fixup_scalars(model: nn.Module) -> list[ScalarBias | ScalarMultiplier]:
    """The Fixup scalar biases and multipliers in `model`. The paper's ImageNet recipe trains them at a
    tenth of the learning rate (its official code: lr / 10 for every bias and multiplier): at the full
    rate one scalar shifts every unit of a wide layer at once, and a ResNet-50 diverges at lr 0.1."""
    return [m for m in model.modules() if isinstance(m, (ScalarBias, ScalarMultiplier))]


def conv_norm_act(
    c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, *, act: Any, norm: Any
) -> nn.Sequential:
    """conv -> norm -> activation (maxout wraps the conv instead); a bias only when there is no norm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=has_bias(norm))
    return nn.Sequential(*layer_norm_act(conv, create_norm(norm, c_out), act))


def linear_norm_act(
    f_in: int, f_out: int, *, act: Any, norm: Any, dropout: float, dropout_mode: str
) -> nn.Sequential:
    """A hidden fully connected layer: linear -> norm -> activation -> dropout (`dropout_mode` "inverted"
    or "test_scale", see trainlab.nn.regularize)."""
    linear = nn.Linear(f_in, f_out, bias=has_bias(norm))
    layers = layer_norm_act(linear, create_norm(norm, f_out, dim=1), act)
    return nn.Sequential(*layers, create_dropout(dropout, dropout_mode))
