"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep Convolutional Networks").

The common single-tower variant (Krizhevsky 2014, "One weird trick"): conv 64 11x11/4 -> max pool 3/2 ->
conv 192 5x5 -> max pool 3/2 -> conv 384, 256, 256 3x3 -> max pool 3/2 -> FC 4096 -> FC 4096 -> FC
classes, dropout before each hidden FC, no local response normalisation. 61,100,840 parameters for 1000
classes.

The paper's 224x224 input does not fit its first layer: (224 - 11) / 4 + 1 = 54.25. The original used
227x227; this variant pads by 2, (224 + 4 - 11) / 4 + 1 = 55.25, and PyTorch floors it to 55.

The small-input variant (28x28, 32x32) has a lighter stem: conv 64 3x3/1 and 2x2 pools, so 28 -> 14 -> 7
-> 4 and the classifier sees 256x2x2 through 1024-wide hidden layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.models.vgg import is_small_input
from trainlab.nn.layers import conv_norm_act, linear_norm_act
from trainlab.nn.regularize import create_dropout


class AlexNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        small_input: bool,
        act: Any = "relu",
        norm: Any = "none",
        dropout: float = 0.5,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        layer = {"act": act, "norm": norm}
        if small_input:
            stem = conv_norm_act(in_channels, 64, 3, padding=1, **layer)
            pools = [nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(2, ceil_mode=True)]
            pooled, hidden = 2, 1024
        else:
            stem = conv_norm_act(in_channels, 64, 11, stride=4, padding=2, **layer)
            pools = [nn.MaxPool2d(3, 2) for _ in range(3)]
            pooled, hidden = 6, 4096
        self.features = nn.Sequential(
            stem,
            pools[0],
            conv_norm_act(64, 192, 5, padding=2, **layer),
            pools[1],
            conv_norm_act(192, 384, 3, padding=1, **layer),
            conv_norm_act(384, 256, 3, padding=1, **layer),
            conv_norm_act(256, 256, 3, padding=1, **layer),
            pools[2],
        )
        self.pool = nn.AdaptiveAvgPool2d(pooled)  # a no-op at 224x224, where the features are already 6x6
        self.classifier = nn.Sequential(
            nn.Flatten(),
            create_dropout(dropout, dropout_mode),
            linear_norm_act(
                256 * pooled * pooled, hidden, dropout=dropout, dropout_mode=dropout_mode, **layer
            ),
            linear_norm_act(hidden, hidden, dropout=0.0, dropout_mode=dropout_mode, **layer),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.classifier(self.pool(self.features(x)))


@register_model("alexnet")
def alexnet(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="none",
    dropout=0.5,
    dropout_mode="inverted",
) -> AlexNet:
    small = is_small_input(image_size, small_input)
    return AlexNet(in_channels, num_classes, small, act, norm, dropout, dropout_mode)
