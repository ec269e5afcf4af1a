"""Models for the tasks after classification (DNN & CNN deck), on SpeedNet's stem and conv groups.

- `locnet`: classification + localisation of one object, two heads on the backbone's last map. The
  class head pools it globally (max) and is linear, as SpeedNet's: what the object is does not depend
  on where it is. The box head flattens it into a fully connected layer (OverFeat's regression head,
  Sermanet et al. 2014: a global pool would throw away where the object is), whose 4 numbers are
  sigmoid(cx, cy, w, h) as fractions of the canvas, returned as xyxy in pixels:
  outputs (B, num_classes + 4).
- `centernet`: Zhou et al. 2019, "Objects as Points". The backbone's groups run at strides 4, 8 and 16
  (64x64 -> 16x16, 8x8, 4x4); a top-down path (as an FPN, Lin et al. 2017: upsample, add the 1x1
  lateral, fuse with a 3x3 conv) brings the deep features back to stride 4, where three heads (3x3 conv,
  act, 1x1 conv) give the class heatmap logits, the box size (w, h, in pixels) and the sub-cell offset
  of the centre: outputs (B, num_classes + 4, S/4, S/4). The heatmap bias starts at -log((1 - p) / p)
  with p = 0.1, as in the paper (from RetinaNet, Lin et al. 2017), so that the many background cells do
  not swamp the first steps of the focal loss.

Both take `init="patch_whitening"` (SpeedNet's data-dependent stem initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.factory import register_model
from trainlab.models.speednet import SpeedNet
from trainlab.nn.activations import create_activation
from trainlab.nn.norm import create_norm

HEATMAP_PRIOR = 0.1  # CenterNet's initial heatmap probability
STRIDE = 4  # CenterNet's output stride


def backbone(in_channels: int, widths: Sequence[int], act: str, norm: str) -> SpeedNet:
    """SpeedNet's patch stem (stride 2) and conv groups (stride 2 each), without its classifier."""
    net = SpeedNet(in_channels, 1, widths, act, norm)
    net.head = nn.Identity()  # not a classifier: the detectors read the groups' maps
    return net


def group_maps(net: SpeedNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Each conv group's output map, at strides 4, 8, 16, ..."""
    maps, x = [], net.stem_act(net.stem(x))
    for group in net.groups:
        x = group(x)
        maps.append(x)
    return maps


def conv_block(c_in: int, c_out: int, act: str, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), create_norm(norm, c_out), create_activation(act)
    )


class LocNet(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, widths: Sequence[int], act: str, norm: str
    ):
        super().__init__()
        side = image_size // 2 ** (len(widths) + 1)
        if side < 1:
            raise ConfigError(f"locnet: {len(widths)} groups reduce a {image_size}-pixel image to nothing")
        self.backbone = backbone(in_channels, widths, act, norm)
        self.head = nn.Linear(widths[-1], num_classes)
        self.box = nn.Sequential(
            nn.Flatten(), nn.Linear(widths[-1] * side * side, 256), create_activation(act), nn.Linear(256, 4)
        )
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, num_classes + 4)
        features = group_maps(self.backbone, x)[-1]  # (B, width, S/16, S/16)
        logits = self.head(F.adaptive_max_pool2d(features, 1).flatten(1))
        box = self.box(features).sigmoid() * self.image_size
        centre, size = box[:, :2], box[:, 2:]
        return torch.cat([logits, centre - size / 2, centre + size / 2], 1)


class TopDown(nn.Module):
    """One FPN step: the deeper map upsampled to the skip's size, plus the skip's 1x1 lateral, fused."""

    def __init__(self, c_skip: int, width: int, act: str, norm: str):
        super().__init__()
        self.lateral = nn.Conv2d(c_skip, width, 1)
        self.fuse = conv_block(width, width, act, norm)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.lateral(skip) + F.interpolate(deep, size=skip.shape[-2:], mode="nearest"))


class CenterNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        neck_width: int,
        head_width: int,
        act: str,
        norm: str,
    ):
        super().__init__()
        self.backbone = backbone(in_channels, widths, act, norm)
        self.top = nn.Conv2d(widths[-1], neck_width, 1)
        self.up = nn.ModuleList(TopDown(w, neck_width, act, norm) for w in reversed(widths[:-1]))
        self.heatmap, self.size, self.offset = (
            self.head(neck_width, head_width, n, act) for n in (num_classes, 2, 2)
        )
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    @staticmethod
    def head(c_in: int, width: int, c_out: int, act: str) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, width, 3, padding=1), create_activation(act), nn.Conv2d(width, c_out, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S) -> (B, num_classes + 4, S/4, S/4)
        maps = group_maps(self.backbone, x)
        y = self.top(maps[-1])
        for step, skip in zip(self.up, reversed(maps[:-1])):
            y = step(y, skip)
        return torch.cat([self.heatmap(y), self.size(y), self.offset(y)], 1)


@register_model("locnet")
def locnet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 64,
    widths: Sequence[int] = (32, 64, 128),
    act: str = "relu",
    norm: str = "batch",
) -> LocNet:
    return LocNet(in_channels, num_classes, image_size, widths, act, norm)


@register_model("centernet")
def centernet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 64,
    widths: Sequence[int] = (32, 64, 128),
    neck_width: int = 64,
    head_width: int = 64,
    act: str = "relu",
    norm: str = "batch",
) -> CenterNet:
    if image_size % STRIDE:
        raise ConfigError(
            f"centernet: the image side ({image_size}) must be a multiple of its stride {STRIDE}"
        )
    return CenterNet(in_channels, num_classes, widths, neck_width, head_width, act, norm)
