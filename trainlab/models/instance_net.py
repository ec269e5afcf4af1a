"""The instance task's network: a U-Net (trainlab.models.unet) whose last 1x1 conv gives, per pixel, the
outputs of centre-based grouping (Cheng et al. 2020, "Panoptic-DeepLab"; trainlab.tasks.instance):

    channels 0..num_classes      semantic scores (0 = background)
    channel  num_classes + 1     the class-agnostic centre heatmap
    channels num_classes + 2, 3  the offset (dy, dx) in pixels from the pixel to its item's centre

One shared decoder serves the three heads: the scenes are small and the heads need the same
full-resolution features (Panoptic-DeepLab's separate decoders pay off on 1024x2048 street scenes).
With `coarse_scores` (speednet encoder) the semantic scores also read the decoder's stride-4 map: with
only the shared full-resolution channels, the classes did not emerge (docs/vision.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainlab.models.factory import register_model
from trainlab.models.unet import SpeedUNet, UNet, build_unet


@register_model("instance_unet")
def instance_unet(
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
    """`coarse_scores` (speednet encoder): the semantic scores add scores predicted at stride 4."""
    coarse = num_classes + 1 if coarse_scores else 0
    model = build_unet(in_channels, num_classes + 4, widths, act, norm, encoder, fine_widths, coarse)
    with torch.no_grad():  # start at "no centre anywhere, no offset": the targets' mean, not noise
        model.head.weight[num_classes + 1 :].zero_()
        model.head.bias[num_classes + 1 :].zero_()
    return model
