"""Mixing pairs of samples and their labels: mixup and cutmix, with soft targets.

- mixup: Zhang et al. 2018, "mixup: Beyond empirical risk minimization". x = lam x_i + (1 - lam) x_j,
  y = lam y_i + (1 - lam) y_j, lam ~ Beta(alpha, alpha).
- cutmix: Yun et al. 2019, "CutMix". A box of area (1 - lam) H W, centred anywhere and clipped, is
  pasted from x_j; lam is then recomputed from the clipped box, so the label mass of y_j is exactly the
  pasted area fraction.

lam is drawn per sample (timm's "elem" mode), and the partner j is a random permutation of the batch.
With both ops in a spec, each sample uses one of them, chosen uniformly (timm's switch_prob = 0.5).
Targets are (B, num_classes) probabilities that sum to 1; label smoothing composes on top in the loss
(cross_entropy(logits, targets, label_smoothing=eps) mixes them with the uniform distribution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.data.augment.base import Op, number, register
from trainlab.data.augment.erase import box_mask


def beta(generator: torch.Generator, n: int, alpha: float) -> torch.Tensor:
    """(n,) samples of Beta(alpha, alpha) from the generator (the first coordinate of a Dirichlet)."""
    concentration = torch.full((n, 2), float(alpha), device=generator.device)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


class MixOp(Op):
    kind = "mix"
    primary = "alpha"

    def __init__(self, alpha: float, p: float = 1.0):
        super().__init__(p)
        self.alpha = number(alpha, self.name, "alpha", 1e-3)

    def mix(self, x, targets, partner, chosen, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix sample i with sample partner[i] where `chosen`; returns images and soft targets."""
        raise NotImplementedError


@register("mixup")
class Mixup(MixOp):
    """Blend two images and their labels with lam ~ Beta(alpha, alpha) per sample."""

    def __init__(self, alpha: float = 0.2, p: float = 1.0):
        super().__init__(alpha, p)

    def mix(self, x, targets, partner, chosen, generator):
        lam = torch.where(chosen, beta(generator, len(x), self.alpha), 1.0)  # (B,)
        images = torch.lerp(x[partner], x, lam.view(-1, 1, 1, 1).to(x.dtype))
        return images, torch.lerp(targets[partner], targets, lam[:, None])


@register("cutmix")
class CutMix(MixOp):
    """Paste a box of area (1 - lam) H W from the partner; label mass follows the pasted area."""

    def __init__(self, alpha: float = 1.0, p: float = 1.0):
        super().__init__(alpha, p)

    def mix(self, x, targets, partner, chosen, generator):
        b, _, h, w = x.shape
        cut = (1 - beta(generator, b, self.alpha)).sqrt() * chosen  # side fraction of the box, 0 if skipped
        cy = torch.randint(0, h, (b,), generator=generator, device=generator.device)
        cx = torch.randint(0, w, (b,), generator=generator, device=generator.device)
        bh, bw = (cut * h).round().long(), (cut * w).round().long()
        top, left = (cy - bh // 2).clamp(0, h), (cx - bw // 2).clamp(0, w)
        bottom, right = (cy - bh // 2 + bh).clamp(0, h), (cx - bw // 2 + bw).clamp(0, w)
        mask = box_mask(top, left, bottom - top, right - left, h, w)  # (B, 1, H, W)
        lam = 1 - ((bottom - top) * (right - left)).float() / (h * w)  # the exact kept fraction
        return torch.where(mask, x[partner], x), torch.lerp(targets[partner], targets, lam[:, None])


class MixStage:
    """The mixing ops of a spec, run last: one random partner per sample, one op per sample."""

    def __init__(self, ops: list[MixOp], num_classes: int):
        self.ops, self.num_classes = ops, num_classes

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        b = len(x)
        targets = labels.float() if labels.ndim == 2 else F.one_hot(labels.long(), self.num_classes).float()
        partner = torch.randperm(b, generator=generator, device=generator.device)
        which = torch.randint(0, len(self.ops), (b,), generator=generator, device=generator.device)
        for k, op in enumerate(self.ops):
            chosen = op.chosen(b, generator) & (which == k)
            x, targets = op.mix(x, targets, partner, chosen, generator)
        return x, targets
