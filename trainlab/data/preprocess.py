"""Data preprocessing, fitted on the training split only: zero-centring, scaling, PCA and whitening.

(Skeleton: issue 3 adds pca, pca_whiten and zca_whiten, and the tests.)

Inputs are float images in [0, 1], shape (N, C, H, W). The fitted statistics are tensors, so they go
into the checkpoint (safetensors) and `predict` applies exactly the same transform.
"""

from __future__ import annotations

from typing import Any

import torch

from trainlab.errors import ConfigError
from trainlab.registry import suggest

MODES = ("none", "scale01", "mean_image", "channel_mean", "channel_mean_std")


class Standardizer:
    """`Standardizer(mode).fit(train_images)`; then `transform(x)` and `inverse_transform(x)`."""

    def __init__(self, mode: str = "channel_mean_std", **options: Any):
        if mode not in MODES:
            raise ConfigError(suggest(mode, list(MODES), "preprocessing mode"))
        self.mode, self.options = mode, options
        self.stats: dict[str, torch.Tensor] = {}

    def fit(self, x: torch.Tensor) -> Standardizer:
        x = as_float01(x)
        if self.mode == "mean_image":
            self.stats = {"mean": x.mean(0, keepdim=True)}
        elif self.mode in ("channel_mean", "channel_mean_std"):
            mean, std = channel_mean_std(x)
            self.stats = {
                "mean": mean,
                "std": std if self.mode == "channel_mean_std" else torch.ones_like(std),
            }
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        x = as_float01(x)
        if "mean" in self.stats:
            x = x - self.stats["mean"].to(x.device)
        if "std" in self.stats:
            x = x / self.stats["std"].to(x.device)
        return x

    __call__ = transform

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        if "std" in self.stats:
            x = x * self.stats["std"].to(x.device)
        if "mean" in self.stats:
            x = x + self.stats["mean"].to(x.device)
        return x

    def to(self, device: torch.device | str) -> Standardizer:
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        return self

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.options}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.stats)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = dict(state)


def as_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def channel_mean_std(x: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, C, H, W) images, in float64 chunks; each of shape (1, C, 1, 1)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, x.shape[0], chunk):
        part = as_float01(x[start : start + chunk]).double()
        total += part.sum((0, 2, 3))
        total_sq += part.square().sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def channel_pca(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the per-pixel colour covariance (Krizhevsky et al. 2012, the AlexNet PCA lighting).

    Every pixel of every image is one C-vector; Sigma = Cov over all N*H*W pixels of (N, C, H, W) `images`
    (uint8 or float in [0, 1]). Returns eigenvalues (C,) in descending order and eigenvectors (C, C)
    whose *columns* are the matching unit eigenvectors, so AlexNet's colour shift per image is
    `eigenvectors @ (alpha * eigenvalues)` with alpha ~ N(0, 0.1^2).
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=images.device)
    outer = torch.zeros(c, c, dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], chunk):
        pixels = as_float01(images[start : start + chunk]).double().transpose(0, 1).reshape(c, -1)  # (C, P)
        total += pixels.sum(1)
        outer += pixels @ pixels.T
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    return eigenvalues.flip(0).clamp_min(0).float(), eigenvectors.flip(1).float()
