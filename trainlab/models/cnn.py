"""The default model: a small VGG-style CNN (conv-norm-act blocks, max pooling, global average pooling).

Sized for 28x28 and 32x32 images on a 2-core CPU: three stages of 3x3 convolutions, each halving the
resolution, then a linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.nn.layers import conv_norm_act
from trainlab.nn.regularize import create_dropout


class SmallCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        act: str = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        stages: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            stages.append(conv_norm_act(c_in, width, 3, padding=1, act=act, norm=norm))
            if i > 0:  # the first stage stays one conv wide: it is the costly one at full resolution
                stages.append(conv_norm_act(width, width, 3, padding=1, act=act, norm=norm))
            stages.append(nn.MaxPool2d(2))
            c_in = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            create_dropout(dropout, dropout_mode),
            nn.Linear(c_in, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))


@register_model("cnn")
def cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    widths: Sequence[int] = (16, 32, 64),
    act: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
    dropout_mode: str = "inverted",
) -> SmallCNN:
    return SmallCNN(in_channels, num_classes, widths, act, norm, dropout, dropout_mode)
