"""Erasing a rectangle per sample: cutout and random erasing.

- cutout: DeVries & Taylor 2017, "Improved regularization of convolutional neural networks with cutout".
  A square of side `size` (pixels, or a fraction of the shorter side below 1) centred anywhere in the
  image, clipped at the borders, set to 0. They use 16 px on CIFAR-10.
- random_erasing: Zhong et al. 2020, "Random erasing data augmentation". A box of area fraction in
  `scale` and aspect ratio (h/w) log-uniform in `ratio`, inside the image, filled with `value` or with
  uniform noise (value="random"). Their defaults: p=0.5, scale 0.02:0.33, ratio 0.3:3.3.

Boxes are built as a mask from per-sample row and column bounds, so the whole batch is one `where`.
"""

from __future__ import annotations

import math

import torch

from trainlab.data.augment.base import Op, number, on_chosen, register, span, uniform
from trainlab.errors import ConfigError


def box_mask(
    top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor, h: int, w: int
):
    """(n, 1, H, W) bool: True inside the per-sample box [top, top + height) x [left, left + width)."""
    ys = torch.arange(h, device=top.device).view(1, h, 1)
    xs = torch.arange(w, device=top.device).view(1, 1, w)
    top, left, height, width = (t.view(-1, 1, 1) for t in (top, left, height, width))
    inside = (ys >= top) & (ys < top + height) & (xs >= left) & (xs < left + width)
    return inside[:, None]


@register("cutout")
class Cutout(Op):
    """A square of side `size` (px, or a fraction of the shorter side below 1), anywhere, set to 0."""

    primary = "size"

    def __init__(self, size: float = 0.5, p: float = 1.0):
        super().__init__(p)
        self.size = number(size, self.name, "size", 0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        side = round(self.size if self.size >= 1 else self.size * min(h, w))
        chosen = self.chosen(b, generator)
        cy = torch.randint(0, h, (b,), generator=generator, device=generator.device)
        cx = torch.randint(0, w, (b,), generator=generator, device=generator.device)
        size = torch.where(chosen, side, 0)  # skipped samples get an empty box: a trivial blend
        mask = box_mask(cy - side // 2, cx - side // 2, size, size, h, w)
        return x.masked_fill(mask, 0)


@register("random_erasing", aliases=("erasing", "random_erase"))
class RandomErasing(Op):
    """A box of area fraction in `scale`, aspect (h/w) in `ratio`, filled with `value` (0-1 or "random")."""

    primary = "scale"

    def __init__(
        self,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | str = 0.0,
        p: float = 0.5,
    ):
        super().__init__(p)
        self.scale = span(scale, self.name, "scale", low=0, high=1)
        self.ratio = span(ratio, self.name, "ratio", low=1e-3)
        if value != "random":
            if isinstance(value, str):
                raise ConfigError(
                    f"random_erasing: value must be a number in [0, 1] or 'random', got {value!r}"
                )
            number(value, self.name, "value", 0, 1)
        self.value = value

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        chosen = self.chosen(b, generator) if self.p < 1 else None
        area = uniform(generator, b, self.scale) * (h * w)
        aspect = uniform(generator, b, (math.log(self.ratio[0]), math.log(self.ratio[1]))).exp()
        eh = (area * aspect).sqrt().round().clamp(1, h).long()
        ew = (area / aspect).sqrt().round().clamp(1, w).long()
        top = (torch.rand(b, generator=generator, device=generator.device) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=generator, device=generator.device) * (w - ew + 1)).long()

        def erase(xs: torch.Tensor, sel) -> torch.Tensor:
            mask = box_mask(top[sel], left[sel], eh[sel], ew[sel], h, w)  # (n, 1, H, W)
            if self.value != "random":
                return xs.masked_fill(mask, float(self.value))
            noise = torch.rand(xs.shape, generator=generator, device=generator.device, dtype=xs.dtype)
            return torch.where(mask, noise, xs)

        return on_chosen(x, chosen, erase)
