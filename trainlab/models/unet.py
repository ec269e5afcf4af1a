"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

An encoder of conv-norm-act pairs that halves the resolution at each level (max pooling) and doubles the
width, and a decoder that climbs back with 2x2 transposed convolutions (stride 2). At each level the
decoder concatenates the encoder's feature map of the same size (the skip connection) before its own two
convs: the coarse levels say *what* is there (a receptive field of the whole 28-pixel item at the
bottom), the skips say *where* its edges are, which upsampling alone has lost. A 1x1 conv maps the last
features to one score per class and pixel.

    unet(num_classes=10): (B, C, H, W) -> (B, 11, H, W), background + the 10 classes

Sizes that are not a multiple of 2**(levels - 1) work too: each upsampled map is padded to its skip's size.

`encoder="speednet"` swaps the plain encoder for SpeedNet's (trainlab/models/speednet.py): its 2x2 patch
stem (stride 2) and conv groups (strides 4, 8, 16 for three widths), the detectors' backbone. The
decoder climbs the same way, level by level with transposed convolutions and concatenated skips,
through the stem's map (stride 2) and the input itself (stride 1), with narrow widths at the two fine
levels. The expensive full-resolution work is the plain U-Net's first level; here the capacity sits at
the coarse levels, where what the item is gets decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.factory import register_model
from trainlab.nn.layers import conv_norm_act


def double_conv(c_in: int, c_out: int, act: Any, norm: Any) -> nn.Sequential:
    """Two 3x3 conv-norm-act layers at one resolution, as each U-Net level has."""
    return nn.Sequential(
        conv_norm_act(c_in, c_out, 3, padding=1, act=act, norm=norm),
        conv_norm_act(c_out, c_out, 3, padding=1, act=act, norm=norm),
    )


def decoder(
    c_in: int, skips: Sequence[int], widths: Sequence[int], act: Any, norm: Any
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The climb back up, deepest level first: at each level a 2x2 transposed conv (stride 2) from the
    level below to `widths[i]`, concatenated with a skip of `skips[i]` channels, then two convs."""
    upsample, up = nn.ModuleList(), nn.ModuleList()
    for skip, width in zip(skips, widths, strict=True):
        upsample.append(nn.ConvTranspose2d(c_in, width, 2, stride=2))
        up.append(double_conv(width + skip, width, act, norm))  # upsampled + skip, concatenated
        c_in = width
    return upsample, up


def decode(upsample: nn.ModuleList, up: nn.ModuleList, x: torch.Tensor, skips: list) -> torch.Tensor:
    """Run `decoder`'s levels from the deepest map `x`, popping `skips` (shallowest first) as it climbs."""
    for step, level in zip(upsample, up, strict=True):
        skip = skips.pop()
        x = step(x)
        x = F.pad(x, (0, skip.shape[-1] - x.shape[-1], 0, skip.shape[-2] - x.shape[-2]))  # odd sizes
        x = level(torch.cat([x, skip], 1))
    return x


class UNet(nn.Module):
    """Encoder widths[0..L-1] (the last one is the bottleneck), decoder back up to widths[0], then a
    1x1 conv to `out_channels` scores per pixel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        act: Any = "relu",
        norm: Any = "batch",
    ):
        super().__init__()
        widths = list(widths)
        self.down = nn.ModuleList()
        c_in = in_channels
        for width in widths:
            self.down.append(double_conv(c_in, width, act, norm))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        coarse_first = widths[-2::-1]
        self.upsample, self.up = decoder(c_in, coarse_first, coarse_first, act, norm)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_channels, H, W)
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck has no skip of its own
        return self.head(decode(self.upsample, self.up, x, skips))


class SpeedUNet(nn.Module):
    """A U-Net on SpeedNet's encoder: skips from the input, the stem (stride 2) and each conv group."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        act: Any = "relu",
        norm: Any = "batch",
        fine_widths: Sequence[int] = (8, 8),
        coarse_scores: int = 0,
    ):
        super().__init__()
        from trainlab.models.detector import backbone

        widths = list(widths)
        self.encoder = backbone(in_channels, widths, act, norm)
        skips = [in_channels, self.encoder.stem.out_channels, *widths[:-1]]  # strides 1, 2, 4, ...
        outs = [*fine_widths, *widths[:-1]]
        self.upsample, self.up = decoder(widths[-1], skips[::-1], outs[::-1], act, norm)
        self.head = nn.Conv2d(fine_widths[0], out_channels, 1)
        self.coarse_levels = len(widths) - 1  # the decoder's levels up to stride 4
        # the first `coarse_scores` outputs also read the stride-4 map (widths[0] channels, a 1x1 conv,
        # upsampled bilinearly): FCN's coarse-plus-fine fusion, so that what an item is comes from deep
        # features and not only from the fine_widths channels at full resolution
        self.coarse_head = nn.Conv2d(widths[0], coarse_scores, 1) if coarse_scores else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_channels, H, W)
        skips = [x, self.encoder.stem_act(self.encoder.stem(x))]
        y = skips[-1]
        for group in self.encoder.groups:
            y = group(y)
            skips.append(y)
        skips.pop()  # the deepest map is where the decoder starts
        k = self.coarse_levels
        coarse = decode(self.upsample[:k], self.up[:k], y, skips)  # stride 4
        out = self.head(decode(self.upsample[k:], self.up[k:], coarse, skips))
        if self.coarse_head is None:
            return out
        n = self.coarse_head.out_channels
        scores = F.interpolate(self.coarse_head(coarse), size=out.shape[-2:], mode="bilinear")
        return torch.cat([out[:, :n] + scores, out[:, n:]], 1)


def build_unet(
    in_channels: int,
    out_channels: int,
    widths: Sequence[int],
    act: str,
    norm: str,
    encoder: str,
    fine_widths: Sequence[int] = (8, 8),
    coarse_scores: int = 0,
) -> UNet | SpeedUNet:
    """The plain or the speednet-encoder U-Net; `coarse_scores` (speednet only): that many leading
    outputs add scores predicted at stride 4."""
    if encoder == "plain":
        if coarse_scores:
            raise ConfigError("model.coarse_scores: only the speednet encoder has them (encoder='speednet')")
        return UNet(in_channels, out_channels, widths, act, norm)
    if encoder == "speednet":
        if len(fine_widths) != 2:
            raise ConfigError(
                f"model.fine_widths={list(fine_widths)!r}: expected two widths (strides 1 and 2)"
            )
        return SpeedUNet(in_channels, out_channels, widths, act, norm, fine_widths, coarse_scores)
    raise ConfigError(f"model.encoder={encoder!r}: expected 'plain' or 'speednet'")


@register_model("unet")
def unet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 64,
    widths: Sequence[int] = (16, 32, 64, 96),
    act: str = "relu",
    norm: str = "batch",
    encoder: str = "plain",
    fine_widths: Sequence[int] = (8, 8),
    coarse_scores: bool = False,
) -> UNet | SpeedUNet:
    """Semantic segmentation: num_classes + 1 scores per pixel (channel 0 is the background).
    `fine_widths`: the speednet encoder's decoder widths at strides 1 and 2; `coarse_scores`: add
    scores predicted at stride 4 (speednet encoder)."""
    coarse = num_classes + 1 if coarse_scores else 0
    return build_unet(in_channels, num_classes + 1, widths, act, norm, encoder, fine_widths, coarse)
