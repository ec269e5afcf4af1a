"""Classification: cross-entropy on hard labels (B,) or soft targets (B, K) from mixup / cutmix,
accuracy, and the confusion matrix with per-class precision, recall and F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.tasks.base import TASKS, Task
from trainlab.tasks.calibration import calibration_summary


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy. Label smoothing mixes the target with the uniform distribution:
    t' = (1 - eps) * t + eps / K, for hard and soft targets alike."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """The class index per sample: the labels themselves, or the argmax of soft targets."""
    return targets.argmax(1) if targets.ndim == 2 else targets


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    confusion = confusion.double()
    tp = confusion.diag()
    precision = tp / confusion.sum(0).clamp_min(1)
    recall = tp / confusion.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


@TASKS.register("classification")
class Classification(Task):
    """Logits (B, K) against class labels (B,) or soft targets (B, K)."""

    name = "classification"
    monitor = "accuracy"
    higher_is_better = True

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing={label_smoothing}: expected a value in [0, 1)")
        self.label_smoothing = label_smoothing

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(outputs, targets, self.label_smoothing)

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"accuracy": torch.zeros((), dtype=torch.long, device=device)}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: torch.Tensor) -> None:
        sums["accuracy"] += (outputs.detach().argmax(1) == hard_labels(targets)).sum()

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        if not len(targets):
            return {"loss": float("nan"), "accuracy": float("nan")}
        return {
            "loss": float(cross_entropy(outputs, targets)),
            "accuracy": float((outputs.argmax(1) == targets).float().mean()),
        }

    def report(self, outputs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
        confusion = confusion_matrix(self.predict(outputs), targets, len(classes)).cpu()
        return {"confusion_matrix": confusion.tolist(), **per_class_scores(confusion)}

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(1)

    def calibration(
        self, outputs: torch.Tensor, targets: torch.Tensor, val: tuple | None = None, prefix: str = "test_"
    ) -> dict[str, float]:
        if not len(targets) or targets.ndim != 1:
            return {}
        return calibration_summary(outputs, targets, *(val or (None, None)), prefix=prefix)
