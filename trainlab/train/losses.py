"""Losses that accept hard labels (B,) or soft targets (B, num_classes) from mixup / cutmix."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy. Label smoothing mixes the target with the uniform distribution:
    t' = (1 - eps) * t + eps / K, for hard and soft targets alike."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """The class index per sample: the labels themselves, or the argmax of soft targets."""
    return targets.argmax(1) if targets.ndim == 2 else targets
