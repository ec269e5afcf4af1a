"""Object detection as CenterNet (Zhou et al. 2019, "Objects as Points"): each object is the peak of a
class heatmap at its box centre, with the box size and the centre's sub-cell offset read there.

Outputs (B, C + 4, H, W) at stride R = 4 (trainlab.models.detector.STRIDE): C heatmap logits, then
(w, h) in pixels, then the offset (ox, oy) in cells. Targets: Scenes.targets() ({"labels" (B, K),
"boxes" (B, K, 4)}).

Training targets, built on the fly from the (augmented) boxes of each batch:
- the centre p = ((x1 + x2) / 2, (y1 + y2) / 2) / R falls in the cell p~ = floor(p);
- heatmap Y[c, y, x] = max over the objects of class c of exp(-((x - p~x)^2 + (y - p~y)^2) / (2 s^2)),
  within a square of radius r around p~, s = (2r + 1) / 6, and r = gaussian_radius(h / R, w / R): the
  largest shift of a corner that keeps an IoU >= 0.7 with the true box (CornerNet, Law & Deng 2018, as
  CenterNet's code computes it). Y = 1 exactly at p~;
- size (w, h) and offset p - p~ at p~.
Loss = focal + 0.1 * L1(size) + L1(offset) (the paper's weights), the focal loss of CornerNet
(alpha 2, beta 4) over every cell, normalised by the number of objects:
    -1/N sum (1 - P)^2 log P                 where Y = 1
    -1/N sum (1 - Y)^4 P^2 log(1 - P)        elsewhere
and the L1 terms averaged over the objects.

Decoding: the heatmap's sigmoid, the cells that equal their 3x3 max-pool (CenterNet's NMS, no box
NMS needed), the top 100 over classes and cells, a score threshold; optionally a class-wise box NMS
(trainlab.tasks.boxes.batched_nms). Metrics from trainlab.tasks.coco_eval: AP@[.5:.95], AP50, AP75,
AR@100, per-class AP and class-agnostic AP.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.models.detector import STRIDE
from trainlab.tasks.base import TASKS, Task
from trainlab.tasks.boxes import batched_nms
from trainlab.tasks.coco_eval import Detections, evaluate_coco

MIN_OVERLAP = 0.7  # CornerNet / CenterNet's IoU for the Gaussian radius
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0  # the paper's loss weights
FOCAL_ALPHA, FOCAL_BETA = 2, 4
PROB_CLAMP = 1e-4  # the reference code clamps the heatmap's sigmoid to [1e-4, 1 - 1e-4]
TOP_K = 100  # COCO's maxDets
SCORE_THRESHOLD = 0.01


def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """The Gaussian radius for boxes of height h and width w (cells), as CenterNet's code computes it:
    the smallest root of three quadratics, one for each way a corner-shifted box can reach IoU
    `min_overlap` with the true box (both corners out, both in, one of each), floored and >= 0."""
    o = min_overlap
    roots = []
    for a, b, c in (
        (1.0, h + w, w * h * (1 - o) / (1 + o)),
        (4.0, 2 * (h + w), (1 - o) * w * h),
        (4 * o, -2 * o * (h + w), (o - 1) * w * h),
    ):
        roots.append((b + (b * b - 4 * a * c).clamp(min=0).sqrt()) / 2)
    return torch.minimum(torch.minimum(roots[0], roots[1]), roots[2]).floor().clamp(min=0)


def centernet_targets(
    labels: torch.Tensor, boxes: torch.Tensor, num_classes: int, shape: tuple[int, int], stride: float
) -> dict[str, torch.Tensor]:
    """The targets of one batch: heatmap (B, C, H, W), and per object slot (B, K): its cell index
    (y * W + x), size (w, h), offset, and whether the slot holds an object."""
    height, width = shape
    valid = labels >= 0
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)  # (B, K, 2) pixels
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2 / stride  # (B, K, 2) cells
    limit = torch.tensor([width - 1, height - 1], device=boxes.device)
    cell = torch.minimum(centre.floor(), limit).clamp(min=0)
    radius = gaussian_radius(wh[..., 1] / stride, wh[..., 0] / stride)  # (B, K)
    sigma = (2 * radius + 1) / 6
    ys = torch.arange(height, device=boxes.device).view(1, 1, -1, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, 1, -1)
    dx, dy = xs - cell[..., 0, None, None], ys - cell[..., 1, None, None]  # (B, K, 1, W), (B, K, H, 1)
    r = radius[..., None, None]
    inside = (dx.abs() <= r) & (dy.abs() <= r) & valid[..., None, None]
    gauss = torch.exp(-(dx * dx + dy * dy) / (2 * sigma[..., None, None] ** 2)) * inside  # (B, K, H, W)
    heat = boxes.new_zeros(len(labels), num_classes, height * width)
    index = labels.clamp(min=0)[..., None].expand(-1, -1, height * width)
    heat.scatter_reduce_(1, index, gauss.flatten(2), "amax")
    return {
        "heatmap": heat.view(-1, num_classes, height, width),
        "index": (cell[..., 1] * width + cell[..., 0]).long(),
        "size": wh,
        "offset": centre - cell,
        "valid": valid,
    }


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CornerNet's penalty-reduced focal loss, summed over the cells, divided by the objects (>= 1)."""
    p = logits.float().sigmoid().clamp(PROB_CLAMP, 1 - PROB_CLAMP)
    positive = heat == 1
    pos = ((1 - p) ** FOCAL_ALPHA * p.log()).masked_fill(~positive, 0).sum()
    neg = ((1 - heat) ** FOCAL_BETA * p**FOCAL_ALPHA * (1 - p).log()).masked_fill(positive, 0).sum()
    return -(pos + neg) / positive.sum().clamp(min=1)


def at_objects(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) maps read at each slot's cell: (B, K, 2)."""
    flat = maps.flatten(2)  # (B, 2, H * W)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


@TASKS.register("detection", targets="scenes")
class Detection(Task):
    name = "detection"
    monitor = "ap"
    higher_is_better = True

    def __init__(self, loss: str = "focal", nms_iou: float | None = None, num_classes: int = 10):
        if loss != "focal":
            raise ConfigError(f"task.loss={loss!r}: the detection task's loss is CenterNet's 'focal'")
        self.nms_iou, self.num_classes = nms_iou, num_classes

    def loss_terms(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.num_classes
        outputs = outputs.float()
        t = centernet_targets(targets["labels"], targets["boxes"], c, outputs.shape[-2:], STRIDE)
        objects = t["valid"].sum().clamp(min=1)
        l1 = lambda maps, target: ((at_objects(maps, t["index"]) - target).abs().sum(-1) * t["valid"]).sum()  # noqa: E731
        return {
            "focal": focal_loss(outputs[:, :c], t["heatmap"]),
            "size": l1(outputs[:, c : c + 2], t["size"]) / objects,
            "offset": l1(outputs[:, c + 2 : c + 4], t["offset"]) / objects,
        }

    def loss(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = self.loss_terms(outputs, targets)
        return terms["focal"] + SIZE_WEIGHT * terms["size"] + OFFSET_WEIGHT * terms["offset"]

    def decode(
        self, outputs: torch.Tensor, top_k: int = TOP_K, threshold: float = SCORE_THRESHOLD
    ) -> Detections:
        """The detections of a batch of output maps: boxes xyxy in pixels, clipped to the canvas."""
        c = self.num_classes
        n, _, height, width = outputs.shape
        heat = outputs[:, :c].float().sigmoid()
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        scores, flat = peaks.flatten(1).topk(min(top_k, c * height * width))  # (N, k)
        labels, cell = flat // (height * width), flat % (height * width)
        size = at_objects(outputs[:, c : c + 2].float(), cell).clamp(min=0)  # (N, k, 2); a size is >= 0
        offset = at_objects(outputs[:, c + 2 : c + 4].float(), cell)
        xy = torch.stack([cell % width, cell // width], -1)
        centre = (xy + offset) * STRIDE
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1).clamp(min=0)
        boxes = torch.minimum(boxes, boxes.new_tensor([width, height, width, height]) * STRIDE)
        image = torch.arange(n, device=outputs.device)[:, None].expand(-1, scores.shape[1])
        keep = scores > threshold
        dets = Detections(image[keep], boxes[keep], scores[keep], labels[keep])
        if self.nms_iou is None or not len(dets.scores):
            return dets
        kept = batched_nms(dets.boxes, dets.scores, dets.image * c + dets.labels, self.nms_iou)
        return Detections(dets.image[kept], dets.boxes[kept], dets.scores[kept], dets.labels[kept])

    def coco(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, Any]:
        """evaluate_coco of the decoded outputs (on the CPU, where it runs)."""
        dets = self.decode(outputs)
        dets = Detections(dets.image.cpu(), dets.boxes.cpu(), dets.scores.cpu(), dets.labels.cpu())
        labels, boxes = targets["labels"].cpu(), targets["boxes"].cpu()
        return evaluate_coco(dets, labels, boxes, num_classes=self.num_classes)

    def evaluate(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        metrics = self.coco(outputs, targets)
        return {
            "loss": float(self.loss(outputs, targets)),
            **{k: float(metrics[k]) for k in ("ap", "ap50", "ap75", "ar100", "class_agnostic_ap")},
        }

    def report(self, outputs: torch.Tensor, targets: dict, classes: list[str]) -> dict[str, Any]:
        per_class = self.coco(outputs, targets)["per_class_ap"]
        return {"per_class_ap": {name: ap for name, ap in zip(classes, per_class)}}
