"""Tone operations that are not affine in colour: solarize, posterize, equalize, autocontrast, sharpness.

These are the PIL-style operations of AutoAugment / RandAugment (Cubuk et al. 2019, 2020), batched:
each takes a float batch in [0, 1] and per-sample parameters. Equalize and posterize work on the
8-bit values round(255 x), as PIL does.
"""

from __future__ import annotations

import torch

from trainlab.data.augment.base import Op, fixed_or_range, on_chosen, register, span, uniform
from trainlab.errors import ConfigError


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above the per-sample threshold (n,)."""
    return torch.where(x >= threshold.view(-1, 1, 1, 1), 1 - x, x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (n,) of each 8-bit value."""
    drop = (8 - bits.long()).view(-1, 1, 1, 1)
    q = x.mul(255).round_().long()
    return ((q >> drop) << drop).to(x.dtype).div_(255)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per sample and channel: value -> (cdf - cdf_min) / (count - cdf_min)."""
    n, c, h, w = x.shape
    q = x.mul(255).round_().long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    cdf = hist.cumsum(1)
    cdf_min = hist.gather(1, q.amin(1, keepdim=True))  # count of the darkest value present
    spread = (h * w - cdf_min).clamp_min(1)
    out = ((cdf - cdf_min) / spread).gather(1, q).to(x.dtype)
    return torch.where(cdf_min < h * w, out, x.view(n * c, -1)).view(n, c, h, w)  # flat channels stay


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, 1]; flat channels stay as they are."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), x)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed copy ([[1,1,1],[1,5,1],[1,1,1]] / 13, borders kept): factor 0 is smooth,
    1 the image, above 1 sharper. The 3x3 sum is two separable passes of shifted adds, no convolution."""
    h, w = x.shape[2:]
    if h < 3 or w < 3:
        return x
    rows = x[:, :, :, :-2] + x[:, :, :, 1:-1] + x[:, :, :, 2:]  # (B, C, H, W - 2)
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]  # (B, C, H - 2, W - 2): 3x3 sums
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = (box + 4 * x[:, :, 1:-1, 1:-1]) / 13
    return torch.lerp(smooth, x, factor.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0, 1)


class ToneOp(Op):
    """A pixel op with one per-sample parameter drawn uniformly from `self.bounds`."""

    bounds: tuple[float, float] = (0.0, 0.0)

    def apply(self, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chosen = self.chosen(len(x), generator) if self.p < 1 else None
        value = uniform(generator, len(x), self.bounds)
        return on_chosen(x, chosen, lambda xs, sel: self.apply(xs, value[sel]))


@register("solarize")
class Solarize(ToneOp):
    """Invert pixels above a threshold drawn from `threshold` (a value or a lo:hi range in [0, 1])."""

    primary = "threshold"

    def __init__(self, threshold: float | tuple[float, float] = 0.5, p: float = 0.5):
        super().__init__(p)
        self.threshold = self.bounds = fixed_or_range(threshold, self.name, "threshold", 0, 1)

    def apply(self, x, value):
        return solarize(x, value)


@register("posterize")
class Posterize(ToneOp):
    """Keep `bits` (1 to 8, or a lo:hi range drawn as whole numbers) of each 8-bit value."""

    primary = "bits"

    def __init__(self, bits: int | tuple[int, int] = 4, p: float = 0.5):
        super().__init__(p)
        lo, hi = bits if isinstance(bits, (list, tuple)) else (bits, bits)
        for b in (lo, hi):
            if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
                raise ConfigError(f"posterize: bits must be whole numbers in [1, 8], got {bits!r}")
        self.bits = (lo, hi)
        self.bounds = (lo, hi + 1 - 1e-6)

    def apply(self, x, value):
        return posterize(x, value.floor())


@register("sharpness", aliases=("sharpen",))
class Sharpness(ToneOp):
    """Blend with a smoothed copy by a factor in [1 - s, 1 + s] (PIL's ImageEnhance.Sharpness)."""

    primary = "factor"

    def __init__(self, factor: float | tuple[float, float] = 0.5, p: float = 1.0):
        super().__init__(p)
        self.factor = self.bounds = span(factor, self.name, "factor", centre=1.0, low=0.0)

    def apply(self, x, value):
        return sharpness(x, value)


@register("equalize", aliases=("equalise", "histogram_equalization"))
class Equalize(ToneOp):
    """Histogram equalisation per channel."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x, value):
        return equalize(x)


@register("autocontrast", aliases=("auto_contrast",))
class AutoContrast(ToneOp):
    """Stretch each channel's range to [0, 1]."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x, value):
        return autocontrast(x)
