"""Semantic segmentation: a class for each pixel, with no objects (the DNN & CNN deck's third task).

Targets are the scenes' dict (trainlab.data.scenes): labels (B, K), boxes (B, K, 4), instances (B, S, S).
The semantic map is 0 on the background and label + 1 on an item's visible pixels, one gather on the
device. The loss is the per-pixel cross-entropy over the 11 scores (background + 10 classes).

Metrics come from one (11 x 11) confusion matrix summed over the whole split (row = true class, column =
predicted class), as PASCAL VOC scores segmentation (Everingham et al. 2010):

    IoU_c = TP_c / (TP_c + FP_c + FN_c) = C[c, c] / (sum_j C[c, j] + sum_i C[i, c] - C[c, c])

mIoU is the mean over the classes that occur in the ground truth or in the predictions; a class absent
from both has no IoU (0 / 0) and is excluded; a class that is only predicted counts with IoU 0.
`miou` averages the background and the 10 classes (VOC's convention), `miou_objects` the 10 classes alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.tasks.base import TASKS, Task
from trainlab.tasks.classification import confusion_matrix
from trainlab.tasks.tta import TTAPolicy, parse_tta

NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes
LOSSES = ("ce", "ce+dice")
CHUNK = 256  # scenes per step when a whole split's outputs are scored: bounds the temporary memory


def semantic_map(targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """int64 (B, S, S): 0 on the background, label + 1 on item k's pixels (instances == k + 1)."""
    labels, instances = targets["labels"], targets["instances"]
    table = torch.cat([labels.new_zeros(len(labels), 1), labels.clamp_min(-1) + 1], 1)  # (B, K + 1); pad -> 0
    return table.gather(1, instances.long().flatten(1)).view(instances.shape)


def add_confusion(confusion: torch.Tensor, logits: torch.Tensor, truth: torch.Tensor) -> None:
    """confusion (C, C) += the counts of (true class, argmax class) over every pixel, on the device."""
    confusion += confusion_matrix(logits.argmax(1).flatten(), truth.flatten(), len(confusion))


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """float64 (C,): each class's IoU, NaN for a class absent from both the truth and the predictions."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor, skip_background: bool = False) -> float:
    """The mean IoU over the classes present in the truth or the predictions (NaN if none is)."""
    iou = iou_per_class(confusion)[1 if skip_background else 0 :]
    present = ~iou.isnan()
    return float(iou[present].mean()) if present.any() else float("nan")


def scores_of_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU (background included), mIoU of the 10 object classes, and pixel accuracy."""
    total = confusion.sum()
    return {
        "miou": mean_iou(confusion),
        "miou_objects": mean_iou(confusion, skip_background=True),
        "pixel_accuracy": float(confusion.diag().sum() / total) if total else float("nan"),
    }


def soft_dice_loss(logits: torch.Tensor, truth: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - the mean over the classes of the batch's soft Dice (Milletari et al. 2016, "V-Net"):
    2 sum(p_c g_c) / (sum p_c + sum g_c). Each class weighs the same whatever its area, so the small
    item classes pull as hard as the background that covers four pixels in five."""
    probs = logits.float().softmax(1)  # (B, C, S, S)
    onehot = F.one_hot(truth, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))  # (C,)
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


def check_semantic_loss(loss: str) -> bool:
    """Whether task.loss (one of LOSSES) adds the soft Dice loss; ConfigError for any other name."""
    if loss not in LOSSES:
        raise ConfigError(f"task.loss={loss!r}: expected one of {', '.join(LOSSES)}")
    return loss == "ce+dice"


def semantic_loss(logits: torch.Tensor, truth: torch.Tensor, dice: bool) -> torch.Tensor:
    """The per-pixel cross-entropy of the (B, 11, S, S) scores, plus soft_dice_loss with `dice`."""
    loss = F.cross_entropy(logits.float(), truth)
    return loss + soft_dice_loss(logits, truth) if dice else loss


def infer_flipped(model: nn.Module, x: torch.Tensor, tta: bool | str | TTAPolicy, unflip) -> torch.Tensor:
    """Outputs that are images: with a flip policy, the mean of model(x) and unflip(model(mirror of x)).
    Shifted views are not supported: their edge padding cannot be moved back exactly."""
    policy = parse_tta(tta)
    if policy.shift:
        raise ConfigError(f"eval.tta={str(policy)!r}: the scene tasks take 'flip' or 'none' (no shifts)")
    outputs = model(x).float()
    if policy.flip:
        outputs = (outputs + unflip(model(x.flip(-1)).float())) / 2
    return outputs


@TASKS.register("segmentation", targets="scenes")
class Segmentation(Task):
    """Scores (B, 11, S, S) against the semantic map of the scenes' targets, by cross-entropy."""

    name = "segmentation"
    monitor = "miou"
    higher_is_better = True

    def __init__(self, loss: str = "ce"):
        self.dice = check_semantic_loss(loss)

    def loss(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return semantic_loss(outputs, semantic_map(targets), self.dice)

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_accuracy": torch.zeros((), device=device)}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: Any) -> None:
        correct = outputs.detach().argmax(1) == semantic_map(targets)  # (B, S, S)
        sums["pixel_accuracy"] += correct.flatten(1).float().mean(1).sum()

    def confusion(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (11, 11) confusion matrix over a whole split, summed chunk by chunk on the device."""
        confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long, device=outputs.device)
        for start in range(0, len(outputs), CHUNK):
            part = slice(start, start + CHUNK)
            add_confusion(confusion, outputs[part], semantic_map({k: v[part] for k, v in targets.items()}))
        return confusion

    def evaluate(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        if not len(outputs):
            return {"loss": float("nan"), "miou": float("nan"), "miou_objects": float("nan")}
        loss = sum(
            F.cross_entropy(
                outputs[s : s + CHUNK].float(),
                semantic_map({k: v[s : s + CHUNK] for k, v in targets.items()}),
                reduction="sum",
            )
            for s in range(0, len(outputs), CHUNK)
        )
        pixels = outputs.shape[0] * outputs.shape[2] * outputs.shape[3]
        return {"loss": float(loss) / pixels, **scores_of_confusion(self.confusion(outputs, targets))}

    def report(
        self, outputs: torch.Tensor, targets: dict[str, torch.Tensor], classes: list[str]
    ) -> dict[str, Any]:
        confusion = self.confusion(outputs, targets).cpu()
        iou = iou_per_class(confusion)
        return {
            "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted; 0 = background
            "per_class_iou": {name: float(v) for name, v in zip(["background", *classes], iou, strict=True)},
        }

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(1)  # (B, S, S): 0 = background, c + 1 = class c

    @torch.no_grad()
    def infer(self, model: nn.Module, x: torch.Tensor, tta: bool | str | TTAPolicy = False) -> torch.Tensor:
        return infer_flipped(model, x, tta, lambda y: y.flip(-1))
