"""Policies that choose operations per sample: RandAugment and TrivialAugment (wide).

- randaugment: Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced
  search space". `n` rounds; in each, every sample picks one of the 14 operations below uniformly, at
  the fixed magnitude `m` on a 0-30 scale, with a random sign where the operation has one.
- trivialaugment: Mueller & Hutter 2021, "TrivialAugment: Tuning-free yet state-of-the-art data
  augmentation". One round; every sample picks one operation and a magnitude uniform in 0-30, over the
  wider ranges of the paper's "wide" space.

Samples are grouped by the operation they picked, so each round runs each operation once on its group
(14 batched calls, no per-sample loop). The ranges at magnitude 30 follow torchvision's tables.
"""

from __future__ import annotations

import math

import torch

import trainlab.data.augment.base as base
from trainlab.data.augment.base import Op, on_chosen, pixels, random_sign, register
from trainlab.data.augment.geometric import resample, rotation, shearing, translation
from trainlab.data.augment.photometric import apply_color, brightness, contrast, saturation
from trainlab.data.augment.tone import autocontrast, equalize, posterize, sharpness, solarize
from trainlab.errors import ConfigError

MAX_MAGNITUDE = 30

# name: (range at magnitude 30 for RandAugment, for TrivialAugment wide)
RANGES = {
    "identity": (0, 0),
    "shear_x": (0.3, 0.99),  # shear factor (tangent)
    "shear_y": (0.3, 0.99),
    "translate_x": (0.45, 32),  # below 1: fraction of the side (150/331); 1 or more: pixels
    "translate_y": (0.45, 32),
    "rotate": (30, 135),  # degrees
    "brightness": (0.9, 0.99),  # factor 1 +- range
    "color": (0.9, 0.99),
    "contrast": (0.9, 0.99),
    "sharpness": (0.9, 0.99),
    "posterize": (4, 6),  # bits removed
    "solarize": (1, 1),  # threshold 1 - range
    "autocontrast": (0, 0),
    "equalize": (0, 0),
}
NAMES = list(RANGES)


def policy_op(name: str, x: torch.Tensor, s: torch.Tensor, r: float) -> torch.Tensor:
    """Operation `name` on (n, C, H, W) float x with signed magnitudes s (n,) in [-1, 1] times range r."""
    c, h, w = x.shape[1:]
    zero = torch.zeros_like(s)
    if name == "shear_x":
        return resample(x, shearing(s * r, zero))
    if name == "shear_y":
        return resample(x, shearing(zero, s * r))
    if name == "translate_x":
        return resample(x, translation(s * pixels(r, w), zero))
    if name == "translate_y":
        return resample(x, translation(zero, s * pixels(r, h)))
    if name == "rotate":
        return resample(x, rotation(s * r * (math.pi / 180)))
    if name == "brightness":
        return apply_color(x, brightness(1 + s * r, c), x.new_zeros(len(x), c))
    if name == "color":
        return apply_color(x, saturation(1 + s * r, c), x.new_zeros(len(x), c))
    if name == "contrast":
        return apply_color(x, *contrast(1 + s * r, x.mean((2, 3)).float()))
    if name == "sharpness":
        return sharpness(x, 1 + s * r)
    if name == "posterize":
        return posterize(x, 8 - (s.abs() * r).round())
    if name == "solarize":
        return solarize(x, 1 - s.abs() * r)
    if name == "autocontrast":
        return autocontrast(x)
    if name == "equalize":
        return equalize(x)
    return x


def apply_policy(x: torch.Tensor, choice: torch.Tensor, s: torch.Tensor, wide: bool) -> torch.Tensor:
    """Every sample i gets operation NAMES[choice[i]] at signed magnitude s[i]; one call per operation,
    on the samples that chose it (CPU) or on all of them, kept where chosen (accelerators, no sync)."""
    if base.avoid_host_sync(x):
        out = x
        for k, name in enumerate(NAMES):
            out = torch.where((choice == k).view(-1, 1, 1, 1), policy_op(name, x, s, RANGES[name][wide]), out)
        return out
    out = torch.empty_like(x)
    for k, name in enumerate(NAMES):
        sel = (choice == k).nonzero().squeeze(1)
        if len(sel):
            out.index_copy_(0, sel, policy_op(name, x.index_select(0, sel), s[sel], RANGES[name][wide]))
    return out


def whole_number(value, op: str, option: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{op}: {option} must be a whole number in [{low}, {high}], got {value!r}")
    return value


@register("randaugment", aliases=("rand_augment", "randaug"))
class RandAugment(Op):
    """`n` rounds of one uniformly chosen operation per sample at magnitude `m` (0-30)."""

    primary = "n"

    def __init__(self, n: int = 2, m: int = 9, p: float = 1.0):
        super().__init__(p)
        self.n = whole_number(n, self.name, "n", 1, 10)
        self.m = whole_number(m, self.name, "m", 0, MAX_MAGNITUDE)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = len(x)
        chosen = self.chosen(b, generator) if self.p < 1 else None
        for _ in range(self.n):
            choice = torch.randint(0, len(NAMES), (b,), generator=generator, device=generator.device)
            s = random_sign(generator, b) * (self.m / MAX_MAGNITUDE)
            x = on_chosen(x, chosen, lambda xs, sel, c=choice, s=s: apply_policy(xs, c[sel], s[sel], False))
        return x


@register("trivialaugment", aliases=("trivial_augment", "trivialaugment_wide"))
class TrivialAugment(Op):
    """One operation per sample, at a magnitude uniform in 0-30, over the wide ranges."""

    def __init__(self, p: float = 1.0):
        super().__init__(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = len(x)
        chosen = self.chosen(b, generator) if self.p < 1 else None
        choice = torch.randint(0, len(NAMES), (b,), generator=generator, device=generator.device)
        level = torch.randint(0, MAX_MAGNITUDE + 1, (b,), generator=generator, device=generator.device)
        s = random_sign(generator, b) * level / MAX_MAGNITUDE
        return on_chosen(x, chosen, lambda xs, sel: apply_policy(xs, choice[sel], s[sel], True))
