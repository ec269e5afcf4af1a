"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition").

Only 3x3 convolutions (stride 1, padding 1, so (N + 2 - 3) / 1 + 1 = N keeps the size) and 2x2 max pools.
Three stacked 3x3 convolutions see a 7x7 receptive field, like one 7x7 convolution, but with three
non-linearities and 3 * (3 * 3 * C * C) = 27C^2 weights instead of 7 * 7 * C * C = 49C^2 (C channels in
and out, biases aside).

The layer lists are data (`VGG_LAYERS`): an int is a 3x3 conv with that many filters, "M" a max pool.
The 224x224 variant ends in 512x7x7 -> FC 4096 -> FC 4096 -> FC classes: vgg16 has 138,357,544
parameters, 102,760,448 of them the first FC layer's weights. The small-input variant (28x28, 32x32)
keeps every conv; its pools round up (28 -> 14 -> 7 -> 4 -> 2 -> 1) and its classifier is 512 wide.

`is_small_input` is shared with the other conv families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.nn.layers import conv_norm_act, linear_norm_act

SMALL_INPUT_MAX = 64  # images up to 64x64 get the small-input variant unless told otherwise

VGG_LAYERS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M"),
        *(256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


def is_small_input(image_size: int, small_input: bool | None) -> bool:
    """The small-input variant (no early downsampling) for images up to SMALL_INPUT_MAX, unless forced."""
    return image_size <= SMALL_INPUT_MAX if small_input is None else small_input


class VGG(nn.Module):
    def __init__(
        self,
        layers: Sequence[int | str],
        in_channels: int,
        num_classes: int,
        small_input: bool,
        act: Any = "relu",
        norm: Any = "none",
        dropout: float = 0.5,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        features: list[nn.Module] = []
        c_in = in_channels
        for layer in layers:
            if layer == "M":
                features.append(nn.MaxPool2d(2, ceil_mode=small_input))
            else:
                features.append(conv_norm_act(c_in, int(layer), 3, padding=1, act=act, norm=norm))
                c_in = int(layer)
        self.features = nn.Sequential(*features)
        pooled, hidden = (1, 512) if small_input else (7, 4096)
        self.pool = nn.AdaptiveAvgPool2d(pooled)  # a no-op at 224x224, where the features are already 7x7
        fc = {"act": act, "norm": norm, "dropout": dropout, "dropout_mode": dropout_mode}
        self.classifier = nn.Sequential(
            nn.Flatten(),
            linear_norm_act(c_in * pooled * pooled, hidden, **fc),
            linear_norm_act(hidden, hidden, **fc),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.classifier(self.pool(self.features(x)))


def _vgg(
    name: str, in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode
) -> VGG:
    small = is_small_input(image_size, small_input)
    return VGG(VGG_LAYERS[name], in_channels, num_classes, small, act, norm, dropout, dropout_mode)


@register_model("vgg11")
def vgg11(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="none",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg11", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg13")
def vgg13(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="none",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg13", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg16")
def vgg16(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="none",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg16", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg19")
def vgg19(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="none",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg19", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg11_bn")
def vgg11_bn(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg11", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg13_bn")
def vgg13_bn(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg13", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg16_bn")
def vgg16_bn(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg16", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)


@register_model("vgg19_bn")
def vgg19_bn(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.5,
    dropout_mode="inverted",
) -> VGG:
    return _vgg("vgg19", in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode)
