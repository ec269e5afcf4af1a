"""LeNet-5 (LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition").

C1: 6 filters 5x5 -> S2: 2x2 subsampling -> C3: 16 filters 5x5 -> S4: 2x2 subsampling -> C5: FC 120 ->
F6: FC 84 -> output. Built for 32x32 digits; a 28x28 input is zero-padded by 2 in C1 so that every
layer has its original size: (28 + 2*2 - 5) / 1 + 1 = 28, then 14, 10, 5, and C5 sees 16x5x5 = 400.
Subsampling is average pooling and the default activation tanh, as in the paper (which used a scaled
tanh and trainable subsampling coefficients); about 61.7k parameters for 10 classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.nn.layers import conv_norm_act, linear_norm_act
from trainlab.nn.shapes import conv_output_size


class LeNet5(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        act: Any = "tanh",
        norm: Any = "none",
        dropout: float = 0.0,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        pad = max(0, (32 - image_size) // 2)  # grow small digits to the 32x32 the layer sizes assume
        size = conv_output_size(conv_output_size(image_size, 5, pad), 2, 0, 2)  # after C1, S2
        size = conv_output_size(conv_output_size(size, 5), 2, 0, 2)  # after C3, S4
        self.features = nn.Sequential(
            conv_norm_act(in_channels, 6, 5, padding=pad, act=act, norm=norm),  # C1
            nn.AvgPool2d(2),  # S2
            conv_norm_act(6, 16, 5, act=act, norm=norm),  # C3
            nn.AvgPool2d(2),  # S4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            linear_norm_act(
                16 * size * size, 120, act=act, norm=norm, dropout=dropout, dropout_mode=dropout_mode
            ),  # C5
            linear_norm_act(120, 84, act=act, norm=norm, dropout=dropout, dropout_mode=dropout_mode),  # F6
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.classifier(self.features(x))


@register_model("lenet5")
def lenet5(
    in_channels=1,
    num_classes=10,
    image_size=28,
    act="tanh",
    norm="none",
    dropout=0.0,
    dropout_mode="inverted",
) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, act, norm, dropout, dropout_mode)
