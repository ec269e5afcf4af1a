"""Classification + localisation (DNN & CNN deck): one object per image, its class and its box.

Outputs (B, K + 4): K class logits, then the box xyxy in pixels (locnet maps its head onto the canvas).
Targets: Scenes.targets() of `fmnist-scenes:localize`, the object in slot 0.

The loss, `task.loss` = terms joined by "+" (default "ce+smooth_l1+giou"), weighted as DETR's box loss
(Carion et al. 2020: 5 for the L1 term, 2 for GIoU):
- ce: cross-entropy of the class logits;
- smooth_l1: Fast R-CNN's smooth L1 (Girshick 2015) of the four coordinates, in pixels (quadratic
  within one pixel, linear beyond, so that a far-off box does not dominate the batch) and divided by
  the canvas side S: the box normalised to [0, 1];
- giou: 1 - GIoU (Rezatofighi et al. 2019), GIoU = IoU - |C \\ (A u B)| / |C| with C the smallest box
  enclosing both: unlike 1 - IoU it still has a gradient when the boxes do not overlap.

Metrics: accuracy (class right), mean_iou (of the predicted box with the true one) and loc_accuracy
(class right and IoU >= 0.5, the ILSVRC localisation criterion), which is the monitored one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.tasks.base import TASKS, Task
from trainlab.tasks.boxes import box_iou, generalized_box_iou
from trainlab.tasks.coco_eval import Detections

TERMS = {"ce": 1.0, "smooth_l1": 5.0, "giou": 2.0}  # DETR's weights
IOU_HIT = 0.5


def paired(pairwise, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) values of a batched pairwise box function for the pairs (a[i], b[i]): (N, 1, 4) x (N, 1, 4)."""
    return pairwise(a[:, None], b[:, None])[:, 0, 0]


def canvas_side(targets: dict[str, torch.Tensor]) -> int:
    return targets["instances"].shape[-1]


@TASKS.register("localization", targets="scenes")
class Localization(Task):
    name = "localization"
    monitor = "loc_accuracy"
    higher_is_better = True

    def __init__(self, loss: str = "ce+smooth_l1+giou"):
        terms = [t.strip() for t in loss.split("+")]
        unknown = [t for t in terms if t not in TERMS]
        if unknown or "ce" not in terms or len(terms) < 2:
            raise ConfigError(
                f"task.loss={loss!r}: expected ce and one or both of smooth_l1 and giou joined by '+', "
                "e.g. ce+smooth_l1+giou"
            )
        self.terms = terms

    @staticmethod
    def split(outputs: torch.Tensor, targets: dict[str, torch.Tensor]):
        """(logits, predicted boxes, labels, true boxes) of each image's one object."""
        return (
            outputs[:, :-4].float(),
            outputs[:, -4:].float(),
            targets["labels"][:, 0],
            targets["boxes"][:, 0],
        )

    def loss_terms(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, boxes, labels, true = self.split(outputs, targets)
        terms = {"ce": F.cross_entropy(logits, labels)}
        if "smooth_l1" in self.terms:
            terms["smooth_l1"] = F.smooth_l1_loss(boxes, true, beta=1.0) / canvas_side(targets)
        if "giou" in self.terms:
            terms["giou"] = (1 - paired(generalized_box_iou, boxes, true)).mean()
        return terms

    def loss(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(TERMS[name] * value for name, value in self.loss_terms(outputs, targets).items())

    def hits(
        self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(class right (N,) bool, IoU (N,)) of each image."""
        logits, boxes, labels, true = self.split(outputs, targets)
        return logits.argmax(1) == labels, paired(box_iou, boxes, true)

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            "accuracy": torch.zeros((), dtype=torch.long, device=device),
            "mean_iou": torch.zeros((), device=device),
            "loc_accuracy": torch.zeros((), dtype=torch.long, device=device),
        }

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: dict) -> None:
        right, iou = self.hits(outputs.detach(), targets)
        sums["accuracy"] += right.sum()
        sums["mean_iou"] += iou.sum()
        sums["loc_accuracy"] += (right & (iou >= IOU_HIT)).sum()

    def evaluate(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        if not len(outputs):
            return {k: float("nan") for k in ("loss", "accuracy", "mean_iou", "loc_accuracy")}
        right, iou = self.hits(outputs, targets)
        return {
            "loss": float(self.loss(outputs, targets)),
            "accuracy": float(right.float().mean()),
            "mean_iou": float(iou.mean()),
            "loc_accuracy": float((right & (iou >= IOU_HIT)).float().mean()),
        }

    def report(self, outputs: torch.Tensor, targets: dict, classes: list[str]) -> dict[str, Any]:
        right, iou = self.hits(outputs, targets)
        labels = targets["labels"][:, 0]
        hit = (right & (iou >= IOU_HIT)).float()
        per_class = [
            float(hit[labels == c].mean()) if (labels == c).any() else None for c in range(len(classes))
        ]
        return {"per_class_loc_accuracy": per_class}

    def decode(self, outputs: torch.Tensor) -> Detections:
        """One detection per image: the predicted box, class and its softmax probability."""
        probs = outputs[:, :-4].float().softmax(1)
        scores, labels = probs.max(1)
        image = torch.arange(len(outputs), device=outputs.device)
        return Detections(image=image, boxes=outputs[:, -4:].float(), scores=scores, labels=labels)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, :-4].argmax(1)
