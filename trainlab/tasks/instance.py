"""Instance segmentation by centre-based grouping (Cheng et al. 2020, "Panoptic-DeepLab"): each object's
own pixels, from three per-pixel outputs of one full-resolution network (trainlab.models.instance_net):

- semantic scores (11: background + 10 classes), trained by cross-entropy on the semantic map;
- a class-agnostic centre heatmap: a Gaussian (std SIGMA pixels) at each item's centre of mass, by MSE;
- an offset (dy, dx) from each item pixel to its item's centre of mass, in pixels, by L1 on item pixels.

    loss = CE(semantic) + CENTRE_WEIGHT * MSE(heatmap) + OFFSET_WEIGHT * L1(offsets on item pixels)

Decoding: the centres are the heatmap's local maxima (a k x k max-pool keeps a pixel equal to its
neighbourhood's maximum: CenterNet's NMS) above a threshold, at most `top_k` per scene; each foreground
pixel (semantic argmax != background) moves by its offset and joins the nearest centre. An instance's
mask is its pixels, its box their tight box (COCO's xyxy), its class the argmax of the semantic scores
summed over the mask (a majority vote), and its score the centre's height times the mean probability of
that class on the mask. Masks are therefore disjoint, as the scenes' visible masks are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.scenes import mask_boxes
from trainlab.tasks.base import TASKS, Task
from trainlab.tasks.coco_eval import Detections, evaluate_coco
from trainlab.tasks.segmentation import (
    NUM_CLASSES,
    add_confusion,
    check_semantic_loss,
    infer_flipped,
    scores_of_confusion,
    semantic_loss,
    semantic_map,
)
from trainlab.tasks.tta import TTAPolicy

SIGMA = 2.0  # pixels: the centre Gaussian's std, about a tenth of an item's size
CENTRE_WEIGHT = 200.0  # Panoptic-DeepLab's weights: the heatmap's MSE is small (mostly zero targets)
OFFSET_WEIGHT = 1.0  # per pixel of L1 error (at 0.1 the offsets did not learn on a tiny overfit)
CHUNK = 256  # scenes per step when a whole split is scored or decoded
HEAT, DY, DX = NUM_CLASSES, NUM_CLASSES + 1, NUM_CLASSES + 2  # output channels after the 11 semantic scores
NUM_OUTPUTS = NUM_CLASSES + 3


def item_masks(targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """bool (B, K, S, S): item k's visible pixels (instances == k + 1)."""
    slots = torch.arange(1, targets["labels"].shape[1] + 1, device=targets["instances"].device)
    return targets["instances"].long()[:, None] == slots[None, :, None, None]


def centre_targets(targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(heatmap (B, S, S), offsets (B, 2, S, S) in pixels, 0 on the background): the Gaussians at the
    items' centres of mass (their maximum where two overlap), and each item pixel's vector to its centre."""
    masks = item_masks(targets).float()  # (B, K, S, S)
    size = masks.shape[-1]
    coords = torch.arange(size, dtype=torch.float32, device=masks.device)
    area = masks.sum((2, 3))  # (B, K)
    cy = (masks.sum(3) @ coords) / area.clamp_min(1)  # (B, K): mean row of the item's pixels
    cx = (masks.sum(2) @ coords) / area.clamp_min(1)
    d2 = (coords[:, None] - cy[..., None, None]) ** 2 + (coords - cx[..., None, None]) ** 2  # (B, K, S, S)
    gauss = torch.exp(-d2 / (2 * SIGMA**2)) * (area > 0)[..., None, None]
    heat = gauss.amax(1) if gauss.shape[1] else masks.new_zeros(len(masks), size, size)
    index = targets["instances"].long().flatten(1)  # (B, S * S), 0 = background
    pad = area.new_zeros(len(area), 1)
    centre_y = torch.cat([pad, cy], 1).gather(1, index).view_as(heat)
    centre_x = torch.cat([pad, cx], 1).gather(1, index).view_as(heat)
    fg = targets["instances"] > 0
    offsets = torch.stack([(centre_y - coords[:, None]) * fg, (centre_x - coords) * fg], 1)
    return heat, offsets


def instance_loss(
    outputs: torch.Tensor, targets: dict[str, torch.Tensor], dice: bool = False
) -> dict[str, torch.Tensor]:
    """The three terms, each a 0-d tensor (the offset term is the mean over item pixels); with `dice`,
    the semantic term adds the soft Dice loss to the cross-entropy (trainlab.tasks.segmentation)."""
    outputs = outputs.float()
    heat, offsets = centre_targets(targets)
    fg = (targets["instances"] > 0)[:, None]  # (B, 1, S, S)
    offset_error = (outputs[:, DY : DX + 1] - offsets).abs() * fg
    return {
        "semantic": semantic_loss(outputs[:, :NUM_CLASSES], semantic_map(targets), dice),
        "centre": F.mse_loss(outputs[:, HEAT], heat),
        "offset": offset_error.sum() / (2 * fg.sum()).clamp_min(1),
    }


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return terms["semantic"] + CENTRE_WEIGHT * terms["centre"] + OFFSET_WEIGHT * terms["offset"]


@torch.no_grad()
def decode_chunk(outputs: torch.Tensor, threshold: float, top_k: int, kernel: int) -> list[torch.Tensor]:
    """[scene, boxes, scores, labels, masks] of one chunk's instances (see the module docstring)."""
    outputs = outputs.float()
    batch, size = len(outputs), outputs.shape[-1]
    probs = outputs[:, :NUM_CLASSES].softmax(1)  # (B, 11, S, S)
    heat = outputs[:, HEAT]
    peaks = heat == F.max_pool2d(heat[:, None], kernel, 1, kernel // 2)[:, 0]
    heights, where = (heat * peaks).flatten(1).topk(min(top_k, size * size))  # (B, P)
    valid = heights > threshold
    coords = torch.arange(size, dtype=torch.float32, device=outputs.device)
    vote_y = coords[:, None] + outputs[:, DY]  # (B, S, S): where each pixel says its centre is
    vote_x = coords + outputs[:, DX]
    d2 = (vote_y[:, None] - (where // size)[..., None, None]) ** 2 + (
        vote_x[:, None] - (where % size)[..., None, None]
    ) ** 2
    nearest = d2.masked_fill(~valid[..., None, None], float("inf")).argmin(1)  # (B, S, S)
    foreground = probs.argmax(1) != 0
    slots = torch.arange(heights.shape[1], device=outputs.device)
    masks = (nearest[:, None] == slots[None, :, None, None]) & foreground[:, None] & valid[..., None, None]
    area = masks.flatten(2).sum(2)  # (B, P)
    class_mass = torch.einsum("bpij,bcij->bpc", masks.float(), probs[:, 1:])  # (B, P, 10)
    mass, labels = class_mass.max(2)
    scores = heights.clamp(0, 1) * mass / area.clamp_min(1)
    keep = area > 0
    scene = torch.arange(batch, device=outputs.device)[:, None].expand_as(keep)
    return [scene[keep], mask_boxes(masks[keep]), scores[keep], labels[keep], masks[keep]]


def decode(
    outputs: torch.Tensor, threshold: float = 0.1, top_k: int = 16, kernel: int = 5, offset: int = 0
) -> Detections:
    """The instances of a split's outputs (N, 14, S, S), scene indices counted from `offset`, on the CPU
    (where the COCO evaluator and the drawing take them)."""
    parts = [
        decode_chunk(outputs[s : s + CHUNK], threshold, top_k, kernel) for s in range(0, len(outputs), CHUNK)
    ]
    if not parts:
        size = outputs.shape[-1]
        empty = torch.zeros(0)
        return Detections(
            empty.long(), empty.view(0, 4), empty, empty.long(), empty.view(0, size, size).bool()
        )
    for s, part in zip(range(0, len(outputs), CHUNK), parts, strict=True):
        part[0] = part[0] + s + offset
    image, boxes, scores, labels, masks = (torch.cat(column).cpu() for column in zip(*parts, strict=True))
    return Detections(image, boxes, scores, labels, masks)


@TASKS.register("instance", targets="scenes")
class Instance(Task):
    """Outputs (B, 14, S, S) = 11 semantic scores, a centre heatmap and offsets (dy, dx), against the
    scenes' targets; decoded into Detections with masks."""

    name = "instance"
    monitor = "mask_ap"
    higher_is_better = True
    num_outputs = NUM_OUTPUTS

    def __init__(self, loss: str = "ce"):  # the semantic term's: ce or ce+dice
        self.dice = check_semantic_loss(loss)

    def loss(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return total_loss(instance_loss(outputs, targets, self.dice))

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_accuracy": torch.zeros((), device=device)}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: Any) -> None:
        correct = outputs.detach()[:, :NUM_CLASSES].argmax(1) == semantic_map(targets)
        sums["pixel_accuracy"] += correct.flatten(1).float().mean(1).sum()

    def decode(self, outputs: torch.Tensor) -> Detections:
        return decode(outputs)

    def evaluate(self, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        if not len(outputs):
            return {"loss": float("nan"), "mask_ap": float("nan"), "box_ap": float("nan")}
        loss, confusion = 0.0, torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long, device=outputs.device)
        for s in range(0, len(outputs), CHUNK):
            part, chunk = outputs[s : s + CHUNK], {k: v[s : s + CHUNK] for k, v in targets.items()}
            loss = loss + total_loss(instance_loss(part, chunk, self.dice)) * len(part)
            add_confusion(confusion, part[:, :NUM_CLASSES], semantic_map(chunk))
        dets = decode(outputs)
        gt = (targets["labels"].cpu(), targets["boxes"].cpu())
        masks = evaluate_coco(dets, *gt, gt_masks=item_masks(targets).cpu(), iou_type="segm")
        boxes = evaluate_coco(dets, *gt, iou_type="bbox")
        semantic = scores_of_confusion(confusion)
        return {
            "loss": float(loss) / len(outputs),
            **{f"mask_{k}": float(masks[k]) for k in ("ap", "ap50", "ap75", "ar100")},
            "mask_class_agnostic_ap": float(masks["class_agnostic_ap"]),
            **{f"box_{k}": float(boxes[k]) for k in ("ap", "ap50", "ap75", "ar100")},
            "miou": semantic["miou"],
        }

    def report(
        self, outputs: torch.Tensor, targets: dict[str, torch.Tensor], classes: list[str]
    ) -> dict[str, Any]:
        dets = decode(outputs)
        masks = evaluate_coco(
            dets, targets["labels"], targets["boxes"], gt_masks=item_masks(targets), iou_type="segm"
        )
        return {
            "per_class_mask_ap": {
                name: float(v) for name, v in zip(classes, masks["per_class_ap"], strict=True)
            }
        }

    def predict(self, outputs: torch.Tensor) -> Detections:
        return decode(outputs)

    @torch.no_grad()
    def infer(self, model: nn.Module, x: torch.Tensor, tta: bool | str | TTAPolicy = False) -> torch.Tensor:
        flip_x = torch.ones(NUM_OUTPUTS, 1, 1, device=x.device)
        flip_x[DX] = -1  # a mirrored image's horizontal offsets point the other way
        return infer_flipped(model, x, tta, lambda y: y.flip(-1) * flip_x)
