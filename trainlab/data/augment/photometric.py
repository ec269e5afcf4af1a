"""Colour jitter and PCA lighting: per-sample affine colour maps, composed and applied in one bmm.

Brightness, contrast, saturation, hue, grayscale and PCA lighting are all affine in the colour vector
of a pixel: x -> M x + b, with M (C, C) and b (C,) per sample. Contrast needs the image's mean grey,
which is itself affine in the per-channel means, so the whole chain is known from the means alone.
The stage composes every colour op of a spec into one (M, b) per sample and applies it with one
`baddbmm`, clamping to [0, 1] once at the end (torchvision clamps after each step; the results differ
only where an intermediate step left [0, 1]).

- brightness f:  M = f I
- contrast f:    M = f I, b = (1 - f) * mean grey (ITU-R 601 luma; channel mean if C != 3)
- saturation f:  M = f I + (1 - f) 1 w^T, a blend with the luma image
- hue h (turns): a rotation by 2 pi h of the chroma plane of YIQ, which keeps luma (as NVIDIA DALI does);
                 close to, not equal to, an HSV hue shift.
- pca_lighting:  b = V (alpha * lambda), alpha ~ N(0, std^2) per sample (Krizhevsky et al. 2012,
                 "fancy PCA"); V, lambda are the eigenvectors and eigenvalues of the colour covariance
                 from `trainlab.data.preprocess.channel_pca` (fitted on the training set), or of the
                 batch if none are given. Images in [0, 1], so lambda is in [0, 1] units too.

On one-channel images saturation, hue and grayscale do nothing (there is no chroma); brightness and
contrast work as usual, and pca_lighting shifts brightness by alpha * variance.
"""

from __future__ import annotations

import math

import torch

from trainlab.data.augment.base import Op, Scratch, number, register, span, uniform
from trainlab.data.preprocess import channel_pca
from trainlab.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = torch.tensor(((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312)))
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def grey_weights(c: int, device: torch.device) -> torch.Tensor:
    """(C,) weights of the grey value: luma for RGB, the plain mean otherwise."""
    return torch.tensor(LUMA, device=device) if c == 3 else torch.full((c,), 1 / c, device=device)


def eye(n: int, c: int, device: torch.device) -> torch.Tensor:
    return torch.eye(c, device=device).expand(n, c, c)


def no_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[:2], device=x.device)  # (B, C) float32, whatever x's dtype


def brightness(f: torch.Tensor, c: int) -> torch.Tensor:
    return eye(len(f), c, f.device) * f.view(-1, 1, 1)


def contrast(f: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, b) that blends with the mean grey; `mean` (B, C) is the current per-channel mean."""
    grey = mean @ grey_weights(mean.shape[1], mean.device)  # (B,)
    return brightness(f, mean.shape[1]), ((1 - f) * grey)[:, None].expand_as(mean)


def saturation(f: torch.Tensor, c: int) -> torch.Tensor:
    if c != 3:
        return eye(len(f), c, f.device)
    to_grey = torch.ones(3, 1, device=f.device) * grey_weights(3, f.device)  # (3, 3), rows = w^T
    return brightness(f, 3) + (1 - f).view(-1, 1, 1) * to_grey


def hue(turns: torch.Tensor, c: int) -> torch.Tensor:
    if c != 3:
        return eye(len(turns), c, turns.device)
    angle = turns * (2 * math.pi)
    rot = eye(len(turns), 3, turns.device).clone()
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = (
        angle.cos(),
        -angle.sin(),
        angle.sin(),
        angle.cos(),
    )
    return YIQ_TO_RGB.to(turns.device) @ rot @ RGB_TO_YIQ.to(turns.device)


def apply_color(
    x: torch.Tensor, m: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """clamp(M x + b, 0, 1) per pixel, with M (B, C, C) and b (B, C): one batched matmul."""
    b, c, h, w = x.shape
    flat = None if out is None else out.view(b, c, h * w)
    y = torch.baddbmm(bias.to(x.dtype)[..., None], m.to(x.dtype), x.reshape(b, c, h * w), out=flat)
    return y.view(b, c, h, w).clamp_(0, 1)


class ColorOp(Op):
    kind = "color"
    needs_mean = False  # True when the map depends on the current per-channel mean

    def transform(
        self, x: torch.Tensor, mean: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M (B, C, C), b (B, C)) per sample; the identity for samples this op skips."""
        if self.p >= 1:
            return self.draw(x, mean, generator)
        chosen = self.chosen(len(x), generator)
        m, b = self.draw(x, mean, generator)
        m = torch.where(chosen.view(-1, 1, 1), m, eye(len(x), x.shape[1], x.device))
        return m, b * chosen[:, None]

    def draw(self, x, mean, generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ColorStage:
    """Every colour op of a spec as one affine colour map per sample: y = clamp(M x + b, 0, 1)."""

    def __init__(self, ops: list[ColorOp]):
        self.ops = ops
        self.needs_mean = any(op.needs_mean for op in ops)
        self.scratch: Scratch | None = None  # set when the next stage copies the result anyway

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c = x.shape[:2]
        mean0 = x.mean((2, 3)).float() if self.needs_mean else None  # (B, C)
        m, bias = eye(b, c, x.device), torch.zeros(b, c, device=x.device)
        for op in self.ops:
            mean = torch.baddbmm(bias[..., None], m, mean0[..., None])[..., 0] if op.needs_mean else None
            mi, bi = op.transform(x, mean, generator)
            m, bias = mi @ m, torch.baddbmm(bi[..., None], mi, bias[..., None])[..., 0]
        out = self.scratch.get("color", tuple(x.shape), x.dtype, x.device) if self.scratch else None
        return apply_color(x, m, bias, out)


@register("color_jitter", aliases=("colour_jitter", "jitter"))
class ColorJitter(ColorOp):
    """Brightness, contrast, saturation (factors in [1 - s, 1 + s]) and hue (turns in [-h, h]), in that
    order. `strength` s sets the ones not given: brightness = contrast = saturation = s, hue = s / 4
    (SimCLR's ratio); without it they default to 0.4, 0.4, 0.4 and 0.1."""

    primary = "strength"
    needs_mean = True

    def __init__(
        self,
        strength: float | None = None,
        brightness: float | tuple[float, float] | None = None,
        contrast: float | tuple[float, float] | None = None,
        saturation: float | tuple[float, float] | None = None,
        hue: float | tuple[float, float] | None = None,
        p: float = 1.0,
    ):
        super().__init__(p)
        s = 0.4 if strength is None else number(strength, self.name, "strength", 0, 1)
        self.strength = strength
        self.brightness = span(s if brightness is None else brightness, self.name, "brightness", 1.0, 0.0)
        self.contrast = span(s if contrast is None else contrast, self.name, "contrast", 1.0, 0.0)
        self.saturation = span(s if saturation is None else saturation, self.name, "saturation", 1.0, 0.0)
        self.hue = span(s / 4 if hue is None else hue, self.name, "hue", low=-0.5, high=0.5)

    def draw(self, x, mean, generator):
        n, c = x.shape[:2]
        bf, cf = uniform(generator, n, self.brightness), uniform(generator, n, self.contrast)
        sf, hf = uniform(generator, n, self.saturation), uniform(generator, n, self.hue)
        after = hue(hf, c) @ saturation(sf, c)  # (B, C, C), applied after contrast
        m, b = contrast(cf, mean * bf[:, None])  # brightness scaled the mean by bf
        return after @ m @ brightness(bf, c), (after @ b[..., None])[..., 0]


@register("brightness")
class Brightness(ColorOp):
    """Multiply by a factor in [1 - s, 1 + s]."""

    primary = "factor"

    def __init__(self, factor: float | tuple[float, float] = 0.4, p: float = 1.0):
        super().__init__(p)
        self.factor = span(factor, self.name, "factor", centre=1.0, low=0.0)

    def draw(self, x, mean, generator):
        return brightness(uniform(generator, len(x), self.factor), x.shape[1]), no_bias(x)


@register("contrast")
class Contrast(ColorOp):
    """Blend with the image's mean grey, factor in [1 - s, 1 + s]."""

    primary = "factor"
    needs_mean = True

    def __init__(self, factor: float | tuple[float, float] = 0.4, p: float = 1.0):
        super().__init__(p)
        self.factor = span(factor, self.name, "factor", centre=1.0, low=0.0)

    def draw(self, x, mean, generator):
        return contrast(uniform(generator, len(x), self.factor), mean)


@register("saturation")
class Saturation(ColorOp):
    """Blend with the luma image, factor in [1 - s, 1 + s] (0 is grey). Nothing on 1 channel."""

    primary = "factor"

    def __init__(self, factor: float | tuple[float, float] = 0.4, p: float = 1.0):
        super().__init__(p)
        self.factor = span(factor, self.name, "factor", centre=1.0, low=0.0)

    def draw(self, x, mean, generator):
        return saturation(uniform(generator, len(x), self.factor), x.shape[1]), no_bias(x)


@register("hue")
class Hue(ColorOp):
    """Rotate the YIQ chroma plane by a fraction of a turn in [-h, h]. Nothing on 1 channel."""

    primary = "turns"

    def __init__(self, turns: float | tuple[float, float] = 0.1, p: float = 1.0):
        super().__init__(p)
        self.turns = span(turns, self.name, "turns", low=-0.5, high=0.5)

    def draw(self, x, mean, generator):
        return hue(uniform(generator, len(x), self.turns), x.shape[1]), no_bias(x)


@register("grayscale", aliases=("greyscale", "grey", "gray"))
class Grayscale(ColorOp):
    """Replace every channel by luma (SimCLR uses p=0.2). Nothing on 1 channel."""

    def __init__(self, p: float = 0.2):
        super().__init__(p)

    def draw(self, x, mean, generator):
        return saturation(torch.zeros(len(x), device=x.device), x.shape[1]), no_bias(x)


@register("pca_lighting", aliases=("fancy_pca", "lighting"))
class PCALighting(ColorOp):
    """AlexNet's colour shift along the principal components: b = V (alpha * lambda), alpha ~ N(0, std^2).

    `eigenvalues` (C,) and `eigenvectors` (C, C, columns) come from `channel_pca(train_images)`; without
    them they are fitted on each batch."""

    primary = "std"

    def __init__(self, std: float = 0.1, eigenvalues=None, eigenvectors=None, p: float = 1.0):
        super().__init__(p)
        self.std = number(std, self.name, "std", 0)
        if (eigenvalues is None) != (eigenvectors is None):
            raise ConfigError("pca_lighting: give both eigenvalues and eigenvectors, or neither")
        try:
            self.eigenvalues = None if eigenvalues is None else torch.as_tensor(eigenvalues).float().tolist()
            self.eigenvectors = (
                None if eigenvectors is None else torch.as_tensor(eigenvectors).float().tolist()
            )
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(
                "pca_lighting: eigenvalues and eigenvectors must be numbers (C,) and (C, C)"
            ) from None
        if self.eigenvalues is not None:
            c = len(self.eigenvalues)
            if torch.tensor(self.eigenvectors).shape != (c, c):
                raise ConfigError(f"pca_lighting: eigenvectors must be {c}x{c} to match {c} eigenvalues")

    def draw(self, x, mean, generator):
        n, c = x.shape[:2]
        if self.eigenvalues is None:
            values, vectors = channel_pca(x)
        else:
            values, vectors = torch.tensor(self.eigenvalues), torch.tensor(self.eigenvectors)
            if len(values) != c:
                raise ConfigError(
                    f"pca_lighting: eigenvalues are for {len(values)} channels, images have {c}"
                )
        values, vectors = values.to(x.device), vectors.to(x.device)
        alpha = torch.randn(n, c, generator=generator, device=generator.device) * self.std
        return eye(n, c, x.device), (alpha * values) @ vectors.T  # (B, C): V (alpha * lambda) per row
