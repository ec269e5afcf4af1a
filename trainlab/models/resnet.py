"""ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition").

A residual block outputs H(x) = act(x + F(x)): its branch F learns the residual F(x) = H(x) - x, so a
block that should do nothing only has to drive F to zero, and the identity path carries the gradient
straight through. resnet18/34 stack BasicBlocks (3x3, 3x3); resnet50/101/152 Bottlenecks (1x1 reduce,
3x3, 1x1 expand by 4), which keep the 3x3 conv on a quarter of the channels.

Stages of 64, 128, 256 and 512 filters; each later stage halves the resolution with a stride-2 conv and
doubles the filters, and its first block's shortcut is a projection (1x1 conv, stride 2, norm) to the
new shape ("option B"). The stride sits on the bottleneck's 3x3 conv, as in torchvision's "v1.5".
Convs have no bias (a norm follows each), so the published counts hold: 11,689,512 parameters for
resnet18 and 25,557,032 for resnet50 with 1000 classes. With `norm="none"` every conv gets a bias, and
Fixup's scalars (Zhang et al. 2019, see trainlab.nn.layers) take the norm's place in each residual branch,
with one more scalar bias before the classifier: the blocks always have them without a norm, whatever
the init, since at init 0 and 1 they change nothing; `init="fixup"` sets the weights around them.

Stem: conv 7x7/2 64 and max pool 3/2 (224 -> 56), or, for small inputs (28x28, 32x32), a lighter stem
of one conv 3x3/1 64 and no pooling, so the four stages run at 28, 14, 7 and 4 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.models.vgg import is_small_input
from trainlab.nn.activations import create_activation
from trainlab.nn.layers import ResidualBlock, ScalarBias, ScalarMultiplier, fixup_bias, has_bias
from trainlab.nn.norm import create_norm
from trainlab.nn.regularize import create_dropout


def conv_norm(
    c_in: int, c_out: int, kernel: int, stride: int = 1, *, norm: Any
) -> tuple[nn.Conv2d, nn.Module]:
    """A kxk conv keeping the size at stride 1 (padding k // 2), and the norm that follows it."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=has_bias(norm))
    return conv, create_norm(norm, c_out)


def shortcut(c_in: int, c_out: int, stride: int, norm: Any) -> nn.Module:
    """Identity when the shape is kept, else a projection: 1x1 conv with the block's stride, then norm."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(*conv_norm(c_in, c_out, 1, stride, norm=norm))


def branch_conv(
    c_in: int, c_out: int, kernel: int, stride: int = 1, *, norm: Any, last: bool = False
) -> tuple[nn.Module, nn.Conv2d, nn.Module]:
    """A conv of a residual branch as (before, conv, after). With a norm: (identity, conv, norm). Without,
    Fixup's scalars: x + b before the conv and x + b after it, or s * x + b after the branch's last conv."""
    conv, after = conv_norm(c_in, c_out, kernel, stride, norm=norm)
    if has_bias(norm):
        after = nn.Sequential(ScalarMultiplier(), ScalarBias()) if last else ScalarBias()
    return fixup_bias(norm), conv, after


class BasicBlock(ResidualBlock):
    """F(x) = norm(conv3x3(act(norm(conv3x3(x))))); out = act(shortcut(x) + F(x)).
    Without a norm: F(x) = s * conv3x3(act(conv3x3(x + b1) + b2) + b3) + b4 (Fixup)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, act: Any = "relu", norm: Any = "batch"):
        super().__init__()
        self.bias1, self.conv1, self.norm1 = branch_conv(c_in, width, 3, stride, norm=norm)
        self.act1 = create_activation(act)
        self.bias2, self.conv2, self.norm2 = branch_conv(width, width, 3, norm=norm, last=True)
        self.shortcut = shortcut(c_in, width, stride, norm)
        self.act = create_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, width, H / stride, W / stride)
        out = self.act1(self.norm1(self.conv1(self.bias1(x))))
        residual = self.norm2(self.conv2(self.bias2(out)))  # F(x) = H(x) - x
        return self.act(self.shortcut(x) + residual)

    def branch_layers(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]


class Bottleneck(ResidualBlock):
    """F(x) = 1x1 expand(3x3(1x1 reduce(x))), each conv followed by norm (and act inside the branch).
    Without a norm, Fixup's scalars as in BasicBlock: a bias before each conv and activation, then
    s * x + b after the last conv."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, act: Any = "relu", norm: Any = "batch"):
        super().__init__()
        c_out = width * self.expansion
        self.bias1, self.conv1, self.norm1 = branch_conv(c_in, width, 1, norm=norm)
        self.act1 = create_activation(act)
        self.bias2, self.conv2, self.norm2 = branch_conv(width, width, 3, stride, norm=norm)
        self.act2 = create_activation(act)
        self.bias3, self.conv3, self.norm3 = branch_conv(width, c_out, 1, norm=norm, last=True)
        self.shortcut = shortcut(c_in, c_out, stride, norm)
        self.act = create_activation(act)

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor:  # (B, C, H, W) -> (B, 4 width, H / stride, W / stride)
        out = self.act1(self.norm1(self.conv1(self.bias1(x))))
        out = self.act2(self.norm2(self.conv2(self.bias2(out))))
        residual = self.norm3(self.conv3(self.bias3(out)))  # F(x) = H(x) - x
        return self.act(self.shortcut(x) + residual)

    def branch_layers(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3]


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: Sequence[int],
        in_channels: int,
        num_classes: int,
        small_input: bool,
        act: Any = "relu",
        norm: Any = "batch",
        dropout: float = 0.0,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(*conv_norm(in_channels, 64, 3, norm=norm), create_activation(act))
        else:
            conv, bn = conv_norm(in_channels, 64, 7, 2, norm=norm)
            self.stem = nn.Sequential(conv, bn, create_activation(act), nn.MaxPool2d(3, 2, padding=1))
        stages: list[nn.Module] = []
        c_in = 64
        for i, depth in enumerate(depths):
            width = 64 * 2**i
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1  # each later stage halves the size, doubles the filters
                blocks.append(block(c_in, width, stride, act, norm))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            create_dropout(dropout, dropout_mode),
            *([ScalarBias()] if has_bias(norm) else []),  # Fixup's scalar bias before the classifier
            nn.Linear(c_in, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(self.stages(self.stem(x)))


def _resnet(
    block, depths, in_channels, num_classes, image_size, small_input, act, norm, dropout, dropout_mode
) -> ResNet:
    small = is_small_input(image_size, small_input)
    return ResNet(block, depths, in_channels, num_classes, small, act, norm, dropout, dropout_mode)


@register_model("resnet18")
def resnet18(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.0,
    dropout_mode="inverted",
) -> ResNet:
    return _resnet(
        BasicBlock,
        (2, 2, 2, 2),
        in_channels,
        num_classes,
        image_size,
        small_input,
        act,
        norm,
        dropout,
        dropout_mode,
    )


@register_model("resnet34")
def resnet34(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.0,
    dropout_mode="inverted",
) -> ResNet:
    return _resnet(
        BasicBlock,
        (3, 4, 6, 3),
        in_channels,
        num_classes,
        image_size,
        small_input,
        act,
        norm,
        dropout,
        dropout_mode,
    )


@register_model("resnet50")
def resnet50(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.0,
    dropout_mode="inverted",
) -> ResNet:
    return _resnet(
        Bottleneck,
        (3, 4, 6, 3),
        in_channels,
        num_classes,
        image_size,
        small_input,
        act,
        norm,
        dropout,
        dropout_mode,
    )


@register_model("resnet101")
def resnet101(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.0,
    dropout_mode="inverted",
) -> ResNet:
    return _resnet(
        Bottleneck,
        (3, 4, 23, 3),
        in_channels,
        num_classes,
        image_size,
        small_input,
        act,
        norm,
        dropout,
        dropout_mode,
    )


@register_model("resnet152")
def resnet152(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    act="relu",
    norm="batch",
    dropout=0.0,
    dropout_mode="inverted",
) -> ResNet:
    return _resnet(
        Bottleneck,
        (3, 8, 36, 3),
        in_channels,
        num_classes,
        image_size,
        small_input,
        act,
        norm,
        dropout,
        dropout_mode,
    )
