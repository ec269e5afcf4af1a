"""Shared layer building blocks.

ResidualBlock is the protocol every residual block follows (He et al. 2015): out = act(shortcut(x) + F(x)),
where the branch F learns the residual H(x) - x. Initialisers such as Fixup (Zhang et al. 2019) find
residual branches through `branch_layers()`, without knowing the model family.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainlab.errors import ConfigError
from trainlab.nn.activations import ACTIVATIONS, create_activation
from trainlab.nn.norm import create_norm
from trainlab.nn.regularize import create_dropout


class ResidualBlock(nn.Module):
    """Base class for residual blocks. Subclasses return their branch's weight layers, in order."""

    def branch_layers(self) -> list[nn.Module]:
        """The conv / linear layers along the residual branch F, input side first."""
        raise NotImplementedError


def conv_output_size(n: int, f: int, p: int = 0, s: int = 1) -> int:
    """Spatial output size of a convolution or pooling: (N + 2P - F) / stride + 1.

    N is the input size, F the filter size, P the padding on each side. Raises ConfigError when the
    filter does not tile the padded input exactly (the lectures' "doesn't fit" case, e.g. N=7, F=3, S=3).
    """
    span = n + 2 * p - f
    if span < 0 or span % s:
        raise ConfigError(
            f"conv output size (N + 2P - F) / stride + 1 = ({n} + 2*{p} - {f}) / {s} + 1 = {span / s + 1:g} "
            "is not a positive integer; change the padding, filter size or stride"
        )
    return span // s + 1


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
