"""SpeedNet: the network of trainlab's speed recipes (`cpu-fast`, `speedrun`, `best`).

The lectures' techniques, arranged for speed (in the spirit of the public CIFAR-10 speedruns):
- a 2x2 patch stem initialised as *patch whitening* (PCA whitening of 2x2 patches, each eigenvector
  as a filter with both signs). With `stem_stride=2` (default) it is, for a 1-channel image, a lossless
  space-to-depth that halves the resolution, with decorrelated, unit-variance channels; with
  `stem_stride=1` the patches overlap and the network keeps the full resolution (about 4x the compute);
- conv groups: conv 3x3 -> max-pool 2 -> BN -> act -> conv 3x3 -> BN -> act;
- global max pooling, then a linear head whose logits are scaled down (`logit_scale`).

    stride 2: 28x28 -> stem 14x14 -> group 7x7 -> group 3x3 -> group 1x1 -> max-pool -> linear
    stride 1: 28x28 -> stem 27x27 -> group 13x13 -> group 6x6 -> group 3x3 -> max-pool -> linear
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.factory import register_model
from trainlab.nn.activations import create_activation
from trainlab.nn.init import INITIALIZERS
from trainlab.nn.norm import create_norm


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, act: str, norm: str):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            create_norm(norm, c_out),
            create_activation(act),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            create_norm(norm, c_out),
            create_activation(act),
        )


class SpeedNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (64, 128, 256),
        act: str = "gelu",
        norm: str = "batch",
        logit_scale: float = 1 / 9,
        stem_stride: int = 2,
    ):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ConfigError(f"speednet: stem_stride must be 1 or 2, got {stem_stride!r}")
        patch_dim = in_channels * 2 * 2
        self.stem = nn.Conv2d(in_channels, 2 * patch_dim, 2, stride=stem_stride, bias=True)
        self.stem_act = create_activation(act)
        groups, c_in = [], 2 * patch_dim
        for width in widths:
            groups.append(ConvGroup(c_in, width, act, norm))
            c_in = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.groups(self.stem_act(self.stem(x)))
        # global max pooling; not x.amax((2, 3)), whose bf16 backward under torch.compile (inductor,
        # torch 2.13) is NaN: tests/test_recipes.py compiles SpeedNet to check.
        return self.head(F.adaptive_max_pool2d(x, 1).flatten(1)) * self.logit_scale


@INITIALIZERS.register("patch_whitening", needs_data=True)
@torch.no_grad()
def patch_whitening(model: nn.Module, batch: torch.Tensor, eps: float = 5e-4) -> None:
    """Initialise every SpeedNet stem as PCA whitening of its 2x2 input patches, measured on `batch`:
    filters +/- v_i / sqrt(lambda_i + eps) for the eigenpairs (lambda_i, v_i) of the patch covariance,
    and a bias that centres the patches. The other layers keep their default initialisation."""
    for net in (m for m in model.modules() if isinstance(m, SpeedNet)):
        c = batch.shape[1]
        patches = batch.float().unfold(2, 2, 2).unfold(3, 2, 2)  # (B, C, H/2, W/2, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        mean = patches.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((patches - mean).T))
        filters = (eigenvectors / (eigenvalues.clamp_min(0) + eps).sqrt()).T  # (C*4, C*4), one per row
        filters = torch.cat([filters, -filters]).float()
        net.stem.weight.copy_(filters.view(-1, c, 2, 2))
        net.stem.bias.copy_(-(filters @ mean.float()))


@register_model("speednet")
def speednet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    widths: Sequence[int] = (64, 128, 256),
    act: str = "gelu",
    norm: str = "batch",
    logit_scale: float = 1 / 9,
    stem_stride: int = 2,
) -> SpeedNet:
    return SpeedNet(in_channels, num_classes, widths, act, norm, logit_scale, stem_stride)
