"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions").

An Inception module runs four branches side by side and concatenates them on channels: a 1x1 conv, a
3x3 conv, a 5x5 conv and a 3x3 max pool. Run naively on a deep input the 3x3 and 5x5 convs are costly
(every filter sees every input channel) and the pool passes all its input channels on, so the depth
only grows. 1x1 "bottleneck" convs fix both: they shrink the channels before the 3x3 and 5x5 convs and
after the pool. On the lectures' 28x28x256 example that cuts 854M multiply-accumulates to 271M; see
`trainlab.models.summary.inception_module_cost`.

The network: stem (conv 7x7/2, max pool, conv 1x1, conv 3x3, max pool), inception 3a-3b, max pool, 4a-4e,
max pool, 5a-5b, global average pool, dropout 0.4, linear. The 5x5 branches are true 5x5 convs as in
the paper. Differences from the paper: no local response normalisation, and `norm="batch"` by default
(as in most reimplementations; `norm="none"` gives the paper's plain convs with biases).

The optional auxiliary heads (after 4a and 4d; average pool to 4x4, conv 1x1 128, FC 1024, dropout
0.7, FC classes) only run in training mode; the model then returns `GoogLeNetOutputs(logits, aux1,
aux2)`, which the paper weights as loss = CE(logits) + 0.3 * (CE(aux1) + CE(aux2)).

The small-input variant (28x28, 32x32) has a lighter stem: conv 3x3/1 64, conv 1x1 64, conv 3x3 192 and
one max pool, so the inception stages run at 14, 7 and 4 pixels.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from trainlab.models.factory import register_model
from trainlab.models.vgg import is_small_input
from trainlab.nn.layers import conv_norm_act, linear_norm_act
from trainlab.nn.regularize import create_dropout

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) filters of each module, Table 1 of the paper.
INCEPTION_V1: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


class Inception(nn.Module):
    """Four branches concatenated on channels. A reduce of None leaves out that 1x1 bottleneck (naive)."""

    def __init__(
        self,
        c_in: int,
        c1: int,
        c3_reduce: int | None,
        c3: int,
        c5_reduce: int | None,
        c5: int,
        pool_proj: int | None,
        act: Any = "relu",
        norm: Any = "none",
    ):
        super().__init__()
        layer = {"act": act, "norm": norm}

        def reduced(c_reduce: int | None) -> list[nn.Module]:
            return [] if c_reduce is None else [conv_norm_act(c_in, c_reduce, 1, **layer)]

        self.branch1 = conv_norm_act(c_in, c1, 1, **layer)
        self.branch3 = nn.Sequential(
            *reduced(c3_reduce), conv_norm_act(c3_reduce or c_in, c3, 3, padding=1, **layer)
        )
        self.branch5 = nn.Sequential(
            *reduced(c5_reduce), conv_norm_act(c5_reduce or c_in, c5, 5, padding=2, **layer)
        )
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), *reduced(pool_proj))
        self.out_channels = c1 + c3 + c5 + (pool_proj or c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_channels, H, W)
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class AuxHead(nn.Module):
    """An auxiliary classifier on an intermediate feature map (training only)."""

    def __init__(self, c_in: int, num_classes: int, act: Any, norm: Any, dropout_mode: str):
        super().__init__()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),  # the paper's 5x5/3 average pool takes 14x14 to 4x4; this fits any size
            conv_norm_act(c_in, 128, 1, act=act, norm=norm),
            nn.Flatten(),
            linear_norm_act(128 * 4 * 4, 1024, act=act, norm=norm, dropout=0.7, dropout_mode=dropout_mode),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.head(x)


class GoogLeNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        small_input: bool,
        aux_logits: bool = False,
        act: Any = "relu",
        norm: Any = "batch",
        dropout: float = 0.4,
        dropout_mode: str = "inverted",
    ):
        super().__init__()
        layer = {"act": act, "norm": norm}
        if small_input:
            first = [conv_norm_act(in_channels, 64, 3, padding=1, **layer)]
        else:
            first = [
                conv_norm_act(in_channels, 64, 7, stride=2, padding=3, **layer),
                nn.MaxPool2d(3, 2, padding=1),
            ]
        self.stem = nn.Sequential(
            *first,
            conv_norm_act(64, 64, 1, **layer),
            conv_norm_act(64, 192, 3, padding=1, **layer),
            nn.MaxPool2d(3, 2, padding=1),
        )
        blocks: dict[str, nn.Module] = {}
        c_in = 192
        for name, filters in INCEPTION_V1.items():
            if name in ("4a", "5a"):  # halve the resolution between stages
                blocks[f"pool{name[0]}"] = nn.MaxPool2d(3, 2, padding=1)
            blocks[name] = Inception(c_in, *filters, **layer)
            c_in = blocks[name].out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.aux1 = AuxHead(512, num_classes, act, norm, dropout_mode) if aux_logits else None  # after 4a
        self.aux2 = AuxHead(528, num_classes, act, norm, dropout_mode) if aux_logits else None  # after 4d
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            create_dropout(dropout, dropout_mode),
            nn.Linear(c_in, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:  # (B, C, H, W) -> (B, classes)
        x = self.stem(x)
        aux = []
        for name, block in self.blocks.items():
            x = block(x)
            if self.training and self.aux1 is not None and name in ("4a", "4d"):
                aux.append((self.aux1 if name == "4a" else self.aux2)(x))
        logits = self.head(x)
        return GoogLeNetOutputs(logits, *aux) if aux else logits


@register_model("googlenet", aliases=("inception_v1",))
def googlenet(
    in_channels=1,
    num_classes=10,
    image_size=28,
    small_input=None,
    aux_logits=False,
    act="relu",
    norm="batch",
    dropout=0.4,
    dropout_mode="inverted",
) -> GoogLeNet:
    small = is_small_input(image_size, small_input)
    return GoogLeNet(in_channels, num_classes, small, aux_logits, act, norm, dropout, dropout_mode)
