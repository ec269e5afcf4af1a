"""Box geometry for localisation and detection: IoU, generalised IoU and class-wise non-maximum suppression.

Boxes are xyxy in pixels, COCO's convention: width = x2 - x1 (see trainlab/data/scenes.py).

- IoU(A, B) = |A n B| / |A u B|, the overlap COCO's AP thresholds (Everingham et al. 2010, "The PASCAL
  Visual Object Classes Challenge"; Lin et al. 2014, COCO).
- GIoU(A, B) = IoU - |C \\ (A u B)| / |C|, C the smallest box enclosing both (Rezatofighi et al. 2019,
  "Generalized Intersection over Union"): in [-1, 1], and still informative when A and B do not overlap,
  so 1 - GIoU is a box-regression loss.
- Greedy NMS: take the highest-scoring box, drop every box of its class that overlaps it by more than a
  threshold, repeat (Felzenszwalb et al. 2010; as in Girshick et al. 2014, R-CNN).
"""

from __future__ import annotations

import torch

from trainlab.errors import TrainlabError

NMS_BLOCK = 1 << 22  # IoU entries per chunk of NMS groups (about 16 MiB of float32)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...) areas (0 for an empty or inverted box)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union areas of (..., A, 4) against (..., B, 4) -> (..., A, B) each."""
    lo = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    hi = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    return inter, box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of a (..., A, 4) with every box of b (..., B, 4): (..., A, B), 0 where the union
    is 0."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of every box of a (..., A, 4) with every box of b (..., B, 4): (..., A, B), differentiable.
    For matched pairs (a loss), take the diagonal or call it on (N, 1, 4) against (N, 1, 4)."""
    inter, union = _inter_union(a, b)
    tiny = torch.finfo(union.dtype).tiny
    lo = torch.minimum(a[..., :, None, :2], b[..., None, :, :2])
    hi = torch.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
    hull = (hi - lo).clamp(min=0).prod(-1)
    return inter / union.clamp(min=tiny) - (hull - union) / hull.clamp(min=tiny)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS within each label (boxes of different labels never suppress each other): the indices of
    the kept boxes, by decreasing score. For detections of many images, pass labels = image * C + class.

    Vectorised: the boxes are grouped by label into padded (G, L, 4) blocks; box i is kept iff no kept
    box ranked above it in its group overlaps it by more than `iou`. Starting from "all kept", that rule
    applied to all boxes at once reaches greedy NMS's answer after at most (longest suppression chain + 1)
    rounds, each a few tensor ops, instead of a loop over boxes."""
    if not boxes.shape[:-1] == scores.shape == labels.shape or boxes.shape[-1:] != (4,):
        raise TrainlabError(
            f"batched_nms: expected boxes (T, 4), scores (T,), labels (T,), got {tuple(boxes.shape)}, "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    if scores.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(-scores, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]  # by label, then by decreasing score
    _, sizes = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(order.numel(), device=boxes.device) - torch.repeat_interleave(starts, sizes)
    group = torch.repeat_interleave(torch.arange(sizes.numel(), device=boxes.device), sizes)
    width = int(sizes.max())
    padded = boxes.new_zeros(sizes.numel(), width, 4)
    padded[group, rank] = boxes[order].to(padded.dtype)
    valid = torch.zeros(sizes.numel(), width, dtype=torch.bool, device=boxes.device)
    valid[group, rank] = True
    keep = torch.zeros_like(valid)
    above = torch.ones(width, width, dtype=torch.bool, device=boxes.device).triu(1)  # [j, i]: j ranks above i
    chunk = max(1, NMS_BLOCK // (width * width))
    for lo in range(0, sizes.numel(), chunk):
        block, ok = padded[lo : lo + chunk], valid[lo : lo + chunk]
        suppresses = (box_iou(block, block) > iou) & above & ok[:, :, None]  # (g, L, L) [j, i]
        kept = ok.clone()
        while True:
            new = ok & ~(suppresses & kept[:, :, None]).any(1)
            if torch.equal(new, kept):
                break
            kept = new
        keep[lo : lo + chunk] = kept
    kept_order = order[keep[group, rank]]
    return kept_order[torch.argsort(-scores[kept_order], stable=True)]
