"""Multi-layer perceptron: the lectures' 784-100-50-10 ReLU network, with configurable widths.

Each hidden layer is Linear -> norm -> activation -> dropout, so the lecture's switches (activation,
batch norm, dropout) all apply to it. It takes feature vectors as well as images (registered
with takes_vectors=True), so it trains on the k components of pca and pca_whiten preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.nn.layers import layer_norm_act
from trainlab.nn.norm import create_norm
from trainlab.nn.regularize import create_dropout


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        widths: Sequence[int] = (100, 50),
        act: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for width in widths:
            layers += layer_norm_act(nn.Linear(width_in, width), create_norm(norm, width, dim=1), act)
            layers.append(create_dropout(dropout, dropout_mode))  # p = 0 is the identity in both modes
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, D) -> (B, num_classes)
        return self.net(x)


@register_model("mlp", takes_vectors=True)
def mlp(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    in_features: int | None = None,
    widths: Sequence[int] = (100, 50),
    act: str = "relu",
    norm: str = "none",
    dropout: float = 0.0,
    dropout_mode: str = "inverted",
) -> MLP:
    """`in_features` sizes it for feature vectors (pca's k components); by default it takes flattened
    images of in_channels * image_size**2 pixels."""
    in_features = in_features or in_channels * image_size * image_size
    return MLP(in_features, num_classes, widths, act, norm, dropout, dropout_mode)
