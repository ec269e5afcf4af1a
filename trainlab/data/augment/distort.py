"""Non-affine warps: radial lens distortion and elastic deformation, each one resampling pass.

- lens_distortion: the radial (Brown-Conrady) model. An output pixel at normalised radius r reads the
  source at radius r (1 + k1 r^2 + k2 r^4), with r = 1 at the image corners. k1 > 0 gives barrel
  distortion (the image bulges, edges are squeezed towards the centre), k1 < 0 pincushion.
- elastic: Simard, Steinkraus & Platt 2003, "Best practices for convolutional neural networks applied to
  visual document analysis": a displacement field of uniform noise in [-1, 1] per pixel, smoothed by a
  Gaussian of std `sigma` pixels and scaled by `alpha` pixels. Their MNIST setting is alpha=34, sigma=4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.data.augment.base import Op, number, on_chosen, register, span, uniform


def centred_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates relative to the image centre: x (1, W) and y (H, 1)."""
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    return xs[None, :], ys[:, None]


def sample_at(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of x at centred pixel coordinates sx, sy (B, H, W); zeros outside."""
    h, w = x.shape[2:]
    grid = torch.stack((sx * (2 / w), sy * (2 / h)), -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def lens_distort(x: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    xs, ys = centred_grid(h, w, x.device)
    r2 = (xs.square() + ys.square()) / ((w - 1) ** 2 / 4 + (h - 1) ** 2 / 4 + 1e-12)  # (H, W), 1 at corners
    factor = 1 + k1.view(-1, 1, 1) * r2 + k2.view(-1, 1, 1) * r2.square()  # (B, H, W)
    return sample_at(x, xs * factor, ys * factor)


def gaussian_matrix(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n, n): row i holds the Gaussian weights of pixel i's neighbours (truncated at 3 sigma), normalised
    over the whole kernel, so that pixels near the border see zero padding, as a convolution would."""
    radius = max(1, math.ceil(3 * sigma))
    i = torch.arange(n, device=device, dtype=torch.float32)
    d = i[:, None] - i[None, :]
    taps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    weights = torch.exp(-0.5 * (d / sigma).square()) * (d.abs() <= radius)
    return weights / torch.exp(-0.5 * (taps / sigma).square()).sum()


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (..., H, W) along both axes, as two matrix products: on the CPU 7x to 24x
    faster than a separable convolution with one input channel, and the same values."""
    h, w = field.shape[-2:]
    return gaussian_matrix(h, sigma, field.device) @ field @ gaussian_matrix(w, sigma, field.device).T


@register("lens_distortion", aliases=("lens", "barrel", "radial_distortion"))
class LensDistortion(Op):
    """Radial distortion with k1 in [-k1, k1] and k2 in [-k2, k2] (or lo:hi ranges) per sample."""

    primary = "k1"

    def __init__(
        self, k1: float | tuple[float, float] = 0.2, k2: float | tuple[float, float] = 0.05, p: float = 1.0
    ):
        super().__init__(p)
        self.k1 = span(k1, self.name, "k1", low=-1, high=1)
        self.k2 = span(k2, self.name, "k2", low=-1, high=1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chosen = self.chosen(len(x), generator) if self.p < 1 else None
        k1, k2 = uniform(generator, len(x), self.k1), uniform(generator, len(x), self.k2)
        return on_chosen(x, chosen, lambda xs, sel: lens_distort(xs, k1[sel], k2[sel]))


@register("elastic", aliases=("elastic_transform", "elastic_distortion"))
class Elastic(Op):
    """Smoothed random displacements: uniform noise, Gaussian std `sigma` px, scaled by `alpha` px."""

    primary = "alpha"

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, p: float = 1.0):
        super().__init__(p)
        self.alpha = number(alpha, self.name, "alpha", 0)
        self.sigma = number(sigma, self.name, "sigma", 0.1, 100)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        chosen = self.chosen(b, generator) if self.p < 1 else None
        noise = torch.rand(b, 2, h, w, generator=generator, device=generator.device).mul_(2).sub_(1)
        return on_chosen(x, chosen, lambda xs, sel: self.warp(xs, noise[sel]))

    def warp(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        xs, ys = centred_grid(h, w, x.device)
        shift = gaussian_smooth(noise, self.sigma) * self.alpha  # (n, 2, H, W) in pixels
        return sample_at(x, xs + shift[:, 0], ys + shift[:, 1])
