"""COCO's detection metrics, computed for a whole split at once: AP@[.5:.95], AP50, AP75, AR@100, per-class
AP, class-agnostic AP, for boxes ("bbox") and instance masks ("segm").

The rules are COCO's (Lin et al. 2014, "Microsoft COCO: Common Objects in Context"; the reference is
pycocotools' COCOeval, which these numbers reproduce to 1e-4, see docs/coco_eval.md):

- per image and class, the at most `max_dets` highest-scoring detections (a stable sort on -score) are
  matched greedily by score: each takes the still unmatched ground-truth object of its class with the
  highest IoU >= t (the last such one on a tie of IoU), at each IoU threshold t = .50, .55, ..., .95;
- per class, all detections of the split in order of score (stable: by image, then rank, on ties):
  precision p(k) = TP(k) / k and recall r(k) = TP(k) / n_gt after the k best; precision made monotone
  from the right, p_interp(r) = max_{r' >= r} p(r'), read at the 101 recalls 0, .01, ..., 1 (0 where the
  recall is never reached); AP = the mean over those 101 points and the 10 thresholds;
- AP is the mean over the classes that have ground truth: a class absent from the ground truth has no
  recall and is skipped (its per-class AP is nan); AR@100 is the mean final recall over thresholds and
  classes; class-agnostic AP pools the classes (COCOeval with useCats=0: max_dets per image).

It is vectorised: the IoUs of every detection against the ground truth of its image and class are one
batched op; the greedy matching runs over the detections' rank within their (image, class), all groups
and thresholds at once (at most max_dets steps); the curves are cumulative sums, one class at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainlab.data import rle
from trainlab.errors import TrainlabError
from trainlab.tasks.boxes import box_iou

IOU_THRESHOLDS = torch.from_numpy(np.linspace(0.5, 0.95, 10))  # float64, the exact values of pycocotools
RECALL_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))
MASK_BLOCK = 1 << 24  # mask pixels gathered per chunk of the segm IoUs (64 MiB of float32)


@dataclass
class Detections:
    """One split's detections, flat over its images (T in all)."""

    image: torch.Tensor  # int64 (T,) scene index in the split (0-based)
    boxes: torch.Tensor  # float32 (T, 4) xyxy pixels
    scores: torch.Tensor  # float32 (T,)
    labels: torch.Tensor  # int64 (T,) class 0..C-1
    masks: torch.Tensor | None = None  # bool (T, H, W) for mask AP

    def __len__(self) -> int:
        return int(self.scores.numel())


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every mask of a (A, H, W) with every mask of b (B, H, W): (A, B) float64, one matmul of the
    flattened masks. The pixel counts are exact in float32 (below 2**24), the ratio is taken in float64
    as pycocotools does; 0 where both masks are empty."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = (fa @ fb.T).double()
    union = fa.sum(1).double()[:, None] + fb.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def _gathered_mask_iou(det_masks: torch.Tensor, gt_masks: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """IoU of each detection's mask (M, P) with the gt masks pairs (M, G) index in gt_masks (n, P)."""
    out = torch.empty(pairs.shape, dtype=torch.float64)
    gt_area = gt_masks.sum(1).double()
    step = max(1, MASK_BLOCK // max(1, pairs.shape[1] * gt_masks.shape[1]))
    for lo in range(0, pairs.shape[0], step):
        d, idx = det_masks[lo : lo + step].float(), pairs[lo : lo + step]
        inter = torch.bmm(gt_masks[idx].float(), d[:, :, None])[..., 0].double()  # (m, G)
        union = d.sum(1).double()[:, None] + gt_area[idx] - inter
        out[lo : lo + step] = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
    return out


def _group_ranks(keys: np.ndarray) -> np.ndarray:
    """For sorted keys: each entry's rank within its run of equal keys (0, 1, ... from the run's start)."""
    starts = np.flatnonzero(np.diff(keys, prepend=keys[:1] - 1)) if keys.size else np.zeros(0, np.int64)
    return np.arange(keys.size) - np.repeat(starts, np.diff(np.append(starts, keys.size)))


def _match(ious: torch.Tensor, rank: np.ndarray, group: np.ndarray, n_groups: int) -> torch.Tensor:
    """COCO's greedy matching. ious (M, G) float64 of detections against their group's ground truth (-1
    for padding), rank (M,) each one's place by score within its group, group (M,) the group's index
    (< n_groups). -> tp (M, T) bool. One step per rank: every group's r-th detection, at every threshold,
    at once."""
    t = IOU_THRESHOLDS.numel()
    taken = torch.zeros(n_groups, t, ious.shape[1], dtype=torch.bool)
    tp = torch.zeros(ious.shape[0], t, dtype=torch.bool)
    flip = torch.arange(ious.shape[1] - 1, -1, -1)
    by_rank = torch.from_numpy(np.argsort(rank, kind="stable"))
    for rows in by_rank.split(np.bincount(rank).tolist() if rank.size else []):
        g = torch.from_numpy(group[rows.numpy()])
        iou = ious[rows][:, None, :].expand(-1, t, -1)  # (n, T, G)
        candidate = (iou >= IOU_THRESHOLDS[None, :, None]) & ~taken[g]
        value = torch.where(candidate, iou, -1.0)
        best = flip[value[..., flip].argmax(-1)]  # argmax keeps the first: flipped, the last of a tie
        hit = candidate.any(-1)  # (n, T)
        n, th = torch.nonzero(hit, as_tuple=True)
        taken[g[n], th, best[n, th]] = True
        tp[rows] = hit
    return tp


def _curves(tp: torch.Tensor, n_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One class's detections in order of score, tp (D, T) -> (interpolated precision (T, 101), final
    recall (T,))."""
    t = tp.shape[1]
    if tp.shape[0] == 0:
        return torch.zeros(t, RECALL_POINTS.numel(), dtype=torch.float64), torch.zeros(t, dtype=torch.float64)
    tps = tp.T.double().cumsum(1)  # (T, D)
    fps = (~tp).T.double().cumsum(1)
    recall = tps / n_gt
    precision = tps / (tps + fps + np.spacing(1))
    precision = precision.flip(1).cummax(1).values.flip(1)  # max over the recalls to the right
    at = torch.searchsorted(recall, RECALL_POINTS.expand(t, -1).contiguous(), side="left")  # (T, 101)
    padded = torch.cat([precision, precision.new_zeros(t, 1)], 1)  # beyond the last recall: 0
    return padded.gather(1, at), recall[:, -1]


def _evaluate(
    image, labels, scores, det_tie, gt_image, gt_label, gt_tie, n_images, n_classes, iou_of, max_dets
):
    """Per-class (precision (C, T, 101) with nan rows for classes without ground truth, recall (C, T))."""
    # Ground truth grouped by (image, class), in its tie order: a dense table of each group's objects.
    gt_key = gt_image * n_classes + gt_label
    gt_order = np.lexsort((gt_tie, gt_key))
    gt_rank = _group_ranks(gt_key[gt_order])
    width = int(gt_rank.max()) + 1 if gt_rank.size else 1
    table = np.full((n_images * n_classes, width), -1, np.int64)
    table[gt_key[gt_order], gt_rank] = gt_order
    # Detections by (image, class), then score (stable), the at most max_dets best of each group kept.
    det_key = image * n_classes + labels
    order = np.lexsort((det_tie, -scores, det_key))
    rank = _group_ranks(det_key[order])
    kept, rank = order[rank < max_dets], rank[rank < max_dets]
    # Only detections with ground truth of their class in their image can match: the IoUs of those.
    pairs = table[det_key[kept]]  # (M, G) gt index, -1 padding
    live = np.flatnonzero(pairs[:, 0] >= 0)
    pairs = torch.from_numpy(pairs[live])
    ious = iou_of(torch.from_numpy(kept[live]), pairs.clamp(min=0)).masked_fill(pairs < 0, -1.0)
    tp = torch.zeros(kept.size, IOU_THRESHOLDS.numel(), dtype=torch.bool)
    tp[live] = _match(ious, rank[live], det_key[kept[live]], n_images * n_classes)
    # Per class, the split's detections by score; on ties by image, then rank (COCOeval's concatenation).
    cls = labels[kept]
    by_score = np.lexsort((-scores[kept], cls))
    n_gt = np.bincount(gt_label, minlength=n_classes)
    bounds = np.searchsorted(cls[by_score], np.arange(n_classes + 1))
    shape = (n_classes, IOU_THRESHOLDS.numel())
    precision = torch.full((*shape, RECALL_POINTS.numel()), float("nan"), dtype=torch.float64)
    recall = torch.full(shape, float("nan"), dtype=torch.float64)
    for c in np.flatnonzero(n_gt):
        rows = torch.from_numpy(by_score[bounds[c] : bounds[c + 1]])
        precision[c], recall[c] = _curves(tp[rows], int(n_gt[c]))
    return precision, recall


def _check(dets: Detections, gt_labels, gt_boxes, gt_masks, iou_type: str, num_classes: int) -> None:
    t = len(dets)
    shapes = tuple(tuple(v.shape) for v in (dets.image, dets.boxes, dets.scores, dets.labels))
    if shapes != ((t,), (t, 4), (t,), (t,)):
        raise TrainlabError(
            f"Detections: expected image (T,), boxes (T, 4), scores (T,), labels (T,), got {shapes}"
        )
    if gt_labels.ndim != 2 or gt_boxes.shape != (*gt_labels.shape, 4):
        raise TrainlabError(
            f"evaluate_coco: expected gt_labels (N, K) and gt_boxes (N, K, 4), got {tuple(gt_labels.shape)} "
            f"and {tuple(gt_boxes.shape)}"
        )
    if t and (dets.image.min() < 0 or dets.image.max() >= gt_labels.shape[0]):
        raise TrainlabError(f"Detections: image indices must be in 0..{gt_labels.shape[0] - 1}")
    for name, values in (("Detections.labels", dets.labels), ("gt_labels", gt_labels[gt_labels >= 0])):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            lo, hi = int(values.min()), int(values.max())
            raise TrainlabError(f"{name}: classes must be in 0..{num_classes - 1}, got {lo} to {hi}")
    if iou_type not in ("bbox", "segm"):
        raise TrainlabError(f"evaluate_coco: iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if iou_type == "segm" and (dets.masks is None or gt_masks is None):
        raise TrainlabError("evaluate_coco: iou_type='segm' needs Detections.masks and gt_masks")
    if iou_type == "segm" and (
        dets.masks.shape[1:] != gt_masks.shape[2:] or gt_masks.shape[:2] != gt_labels.shape
    ):
        raise TrainlabError(
            f"evaluate_coco: expected masks (T, H, W) and gt_masks (N, K, H, W) of one size, got "
            f"{tuple(dets.masks.shape)} and {tuple(gt_masks.shape)}"
        )


def _mean(values: torch.Tensor) -> float:
    """The mean over the classes with ground truth (nan rows skipped, as COCOeval skips its -1 entries)."""
    valid = values[~values.isnan()]
    return float(valid.mean()) if valid.numel() else float("nan")


def evaluate_coco(
    dets: Detections,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_masks: torch.Tensor | None = None,
    iou_type: str = "bbox",
    max_dets: int = 100,
    num_classes: int = 10,
) -> dict:
    """COCO's metrics of a split: gt_labels (N, K) int64 with -1 padding, gt_boxes (N, K, 4) xyxy,
    gt_masks bool (N, K, H, W) for iou_type="segm". -> {"ap", "ap50", "ap75", "ar100", "per_class_ap"
    (num_classes floats, nan for a class absent from the ground truth), "class_agnostic_ap"}."""
    # The evaluation runs on the CPU (numpy sorts, a loop of small steps), wherever the model ran.
    masks = None if dets.masks is None else dets.masks.cpu()
    dets = Detections(dets.image.cpu(), dets.boxes.cpu(), dets.scores.cpu(), dets.labels.cpu(), masks)
    gt_labels, gt_boxes = gt_labels.cpu(), gt_boxes.cpu()
    gt_masks = None if gt_masks is None else gt_masks.cpu()
    _check(dets, gt_labels, gt_boxes, gt_masks, iou_type, num_classes)
    valid = gt_labels >= 0
    gt_image, gt_slot = (v.numpy() for v in torch.nonzero(valid, as_tuple=True))
    gt_label = gt_labels[valid].numpy()
    image, labels = dets.image.numpy(), dets.labels.numpy()
    scores = dets.scores.double().numpy()
    if iou_type == "bbox":
        det_geom, gt_geom = dets.boxes.double(), gt_boxes[valid].double()

        def iou_of(kept, pairs):  # (M,) det indices, (M, G) gt indices -> (M, G)
            return box_iou(det_geom[kept][:, None], gt_geom[pairs])[:, 0]
    else:
        det_geom, gt_geom = dets.masks.flatten(1), gt_masks[valid].flatten(1)

        def iou_of(kept, pairs):
            return _gathered_mask_iou(det_geom[kept], gt_geom, pairs)

    n = gt_labels.shape[0]
    index = np.arange(len(dets))
    precision, recall = _evaluate(
        image, labels, scores, index, gt_image, gt_label, gt_slot, n, num_classes, iou_of, max_dets
    )
    # COCOeval with useCats=0 lists an image's objects and detections class by class.
    agnostic, _ = _evaluate(
        image, np.zeros_like(labels), scores, labels * max(1, len(dets)) + index, gt_image,
        np.zeros_like(gt_label), gt_label * gt_labels.shape[1] + gt_slot, n, 1, iou_of, max_dets,
    )  # fmt: skip
    per_class = precision.mean((1, 2))
    return {
        "ap": _mean(per_class),
        "ap50": _mean(precision[:, 0].mean(1)),
        "ap75": _mean(precision[:, 5].mean(1)),
        "ar100": _mean(recall.mean(1)),
        "per_class_ap": per_class.tolist(),
        "class_agnostic_ap": _mean(agnostic.mean((1, 2))),
    }


def to_coco_results(dets: Detections, with_masks: bool = False) -> list[dict]:
    """The COCO results format: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"(, "segmentation":
    compressed RLE)}], image_id = scene index + 1 and category_id = class + 1 (as the COCO export writes).
    The boxes' float32 values are written exactly (as float64, where x + w gives back x2)."""
    boxes = dets.boxes.double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    results = [
        {"image_id": i + 1, "category_id": c + 1, "bbox": b, "score": s}
        for i, c, b, s in zip(
            dets.image.tolist(), dets.labels.tolist(), xywh, dets.scores.double().tolist(), strict=True
        )
    ]
    if with_masks:
        if dets.masks is None:
            raise TrainlabError("to_coco_results: with_masks=True needs Detections.masks")
        for result, encoded in zip(results, rle.encode(dets.masks), strict=True):
            result["segmentation"] = encoded
    return results
