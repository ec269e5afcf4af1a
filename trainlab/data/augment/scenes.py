"""Augmentation for scenes: the boxes and masks move with the image (flip, translate, scale).

One affine map per sample, in pixel coordinates centred on the canvas (u = x - S/2): a horizontal
flip u -> -u, then a zoom u -> s u about the centre, then an integer shift by t. The image is
resampled bilinearly and the instance map by nearest neighbour, through the same grid (`F.affine_grid`
with the inverse map, `align_corners=False`), and the targets are rebuilt from the moved instance map:
each box is again exactly the tight box of its moved mask, and an item pushed out of the canvas is
removed.

Against the analytic map of the old box, an edge x -> s (x - S/2) + S/2 + t: flips and shifts give it
exactly; a zoom (s >= 1) within half a pixel, the rounding of nearest-neighbour sampling; a zoom out
(s < 1) can skip a thin extreme row or column of a mask, so the new box lies inside the analytic one
widened by half a pixel, but may be tighter. Pixels that come from outside the canvas are 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.data.scenes import targets_from_instances
from trainlab.errors import ConfigError


def augment_scenes(
    images: torch.Tensor,
    targets: dict[str, torch.Tensor],
    generator: torch.Generator,
    flip: bool = True,
    translate: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """float images (B, C, S, S) and targets {"labels" (B, K), "boxes" (B, K, 4), "instances"
    (B, S, S)} -> both moved by one random map per sample: a horizontal flip with probability 1/2
    (when `flip`), a zoom by s uniform in `scale`, and a shift by integers in [-translate, translate]."""
    if not isinstance(translate, int) or isinstance(translate, bool) or translate < 0:
        raise ConfigError(f"augment_scenes translate={translate!r}: expected an int >= 0 (pixels)")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"augment_scenes scale={scale!r}: expected (lo, hi) with 0 < lo <= hi")
    b, _, h, w = images.shape
    dev = generator.device
    sign = (
        torch.where(torch.rand(b, generator=generator, device=dev) < 0.5, -1.0, 1.0)
        if flip
        else torch.ones(b, device=dev)
    )
    zoom = torch.rand(b, generator=generator, device=dev) * (scale[1] - scale[0]) + scale[0]
    shift = torch.randint(-translate, translate + 1, (b, 2), generator=generator, device=dev).float()
    # inverse map, output -> source, in grid_sample's units (u * 2 / S): u = sign * (u' - t) / s
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = sign / zoom, 1 / zoom
    theta[:, 0, 2] = -sign * shift[:, 0] * 2 / w / zoom
    theta[:, 1, 2] = -shift[:, 1] * 2 / h / zoom
    grid = F.affine_grid(theta.to(images.device), [b, 1, h, w], align_corners=False).to(images.dtype)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ids = targets["instances"][:, None].to(images.dtype)
    ids = F.grid_sample(ids, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    new = targets_from_instances(targets["labels"], ids.round().to(torch.uint8))
    return moved, {**targets, **new}
