"""trainlab's COCO evaluator against pycocotools' COCOeval (the reference), to 1e-4, on random scenes and on
the edge cases COCO has rules for: no detections, duplicates, absent classes, > 100 detections, score ties.

The pycocotools side is built in memory with the COCO ids of the scene export (image_id = index + 1,
category_id = class + 1), from the same float32 boxes; the results list is trainlab's to_coco_results.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.data import rle
from trainlab.errors import TrainlabError
from trainlab.tasks.boxes import batched_nms, box_iou, generalized_box_iou
from trainlab.tasks.coco_eval import Detections, evaluate_coco, mask_iou, to_coco_results

C, S = 10, 64  # classes, canvas size
TOL = 1e-4  # the agreement; the numbers are computed in float64 and differ by ~1e-16


def random_scenes(seed: int, n: int = 12, k: int = 5, absent: tuple = ()):
    """Ground truth: n scenes of 1..k boxes (classes outside `absent`), float32 xyxy in pixels."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(1, k + 1, (n, 1), generator=g)
    allowed = torch.tensor([c for c in range(C) if c not in absent])
    labels = allowed[torch.randint(0, allowed.numel(), (n, k), generator=g)]
    labels = torch.where(torch.arange(k) < count, labels, -1)
    xy = torch.rand(n, k, 2, generator=g) * (S - 16)
    wh = 6 + torch.rand(n, k, 2, generator=g) * 20
    boxes = torch.cat([xy, (xy + wh).clamp(max=S)], -1).where(labels[..., None] >= 0, 0.0)
    return labels, boxes


def random_detections(seed, labels, boxes, per_gt=3, extra=4, wrong=0.2, tie_decimals=None, absent=()):
    """Noisy copies of each gt box (sometimes with a wrong class), plus random false positives."""
    g = torch.Generator().manual_seed(seed + 1000)
    n, k = labels.shape
    image, slot = torch.nonzero(labels >= 0, as_tuple=True)
    image, slot = image.repeat_interleave(per_gt), slot.repeat_interleave(per_gt)
    box = boxes[image, slot]
    size = (box[:, 2:] - box[:, :2]).repeat(1, 2)
    box = box + torch.randn(box.shape, generator=g) * size * 0.12
    label = labels[image, slot]
    flip = torch.rand(label.shape, generator=g) < wrong
    label = torch.where(flip, torch.randint(0, C, label.shape, generator=g), label)
    fp_image = torch.randint(0, n, (n * extra,), generator=g)
    xy = torch.rand(n * extra, 2, generator=g) * (S - 10)
    fp_box = torch.cat([xy, xy + 4 + torch.rand(n * extra, 2, generator=g) * 20], 1)
    image, box = torch.cat([image, fp_image]), torch.cat([box, fp_box])
    label = torch.cat([label, torch.randint(0, C, (n * extra,), generator=g)])
    scores = torch.rand(image.shape, generator=g)
    if tie_decimals is not None:
        scores = (scores * 10**tie_decimals).round() / 10**tie_decimals
    keep = ~torch.isin(label, torch.tensor(absent, dtype=torch.long))
    perm = torch.randperm(int(keep.sum()), generator=g)  # the results list in no particular order
    box = torch.cat([box[:, :2], torch.maximum(box[:, 2:], box[:, :2] + 0.5)], 1)
    return Detections(image[keep][perm], box[keep][perm], scores[keep][perm].float(), label[keep][perm])


def box_masks(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes -> (..., S, S) bool masks: the pixels inside, with a ragged corner cut out."""
    ys = torch.arange(S, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(S, dtype=torch.float32)[None, :] + 0.5
    b = boxes[..., None, None, :]
    inside = (xs >= b[..., 0]) & (xs < b[..., 2]) & (ys >= b[..., 1]) & (ys < b[..., 3])
    corner = (xs - b[..., 0]) + (ys - b[..., 1]) < (b[..., 2] - b[..., 0]) / 3
    return inside & ~corner


def pycocotools_eval(labels, boxes, dets, iou_type="bbox", gt_masks=None, use_cats=True):
    """COCOeval on the same data: (its summary numbers, per-class AP with nan for -1)."""
    pytest.importorskip("pycocotools", reason="pycocotools (the coco extra) is not installed")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n = labels.shape[0]
    gt = COCO()
    annotations = []
    for i, k in torch.nonzero(labels >= 0).tolist():
        x1, y1, x2, y2 = boxes[i, k].double().tolist()
        ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(labels[i, k]) + 1,
               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}  # fmt: skip
        if gt_masks is not None:
            ann["segmentation"] = rle.encode(gt_masks[i, k][None])[0]
            ann["area"] = rle.area([ann["segmentation"]])[0]
        annotations.append(ann)
    gt.dataset = {
        "images": [{"id": i + 1, "width": S, "height": S} for i in range(n)],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(C)],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if len(dets):
            dt = gt.loadRes(to_coco_results(dets, with_masks=iou_type == "segm"))
        else:  # loadRes cannot take an empty list; an empty results set is what it would build
            dt = COCO()
            dt.dataset = {
                "images": gt.dataset["images"],
                "categories": gt.dataset["categories"],
                "annotations": [],
            }
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.useCats = int(use_cats)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", maxDets 100
    per_class = [float(p.mean()) if (p > -1).all() else math.nan for p in np.moveaxis(precision, 2, 0)]
    stats = ev.stats
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2], "ar100": stats[8]}, per_class


def assert_agrees(labels, boxes, dets, iou_type="bbox", gt_masks=None):
    ours = evaluate_coco(dets, labels, boxes, gt_masks=gt_masks, iou_type=iou_type)
    theirs, per_class = pycocotools_eval(labels, boxes, dets, iou_type, gt_masks)
    for key, value in theirs.items():
        expected = math.nan if value == -1 else value
        assert ours[key] == pytest.approx(expected, abs=TOL, nan_ok=True), (key, ours[key], value)
    assert ours["per_class_ap"] == pytest.approx(per_class, abs=TOL, nan_ok=True)
    agnostic, _ = pycocotools_eval(labels, boxes, dets, iou_type, gt_masks, use_cats=False)
    assert ours["class_agnostic_ap"] == pytest.approx(agnostic["ap"], abs=TOL)
    return ours


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), per_gt=st.integers(1, 4), wrong=st.sampled_from([0.0, 0.3]))
def test_agrees_with_cocoeval_on_random_scenes(seed, per_gt, wrong):
    labels, boxes = random_scenes(seed)
    dets = random_detections(seed, labels, boxes, per_gt=per_gt, wrong=wrong)
    ours = assert_agrees(labels, boxes, dets)
    assert 0 < ours["ap"] < 1  # noisy boxes: neither trivially perfect nor empty


@pytest.mark.parametrize("seed", [3, 4])
def test_agrees_with_cocoeval_on_masks(seed):
    labels, boxes = random_scenes(seed)
    dets = random_detections(seed, labels, boxes, per_gt=2)
    dets.masks = box_masks(dets.boxes)
    ours = assert_agrees(labels, boxes, dets, "segm", box_masks(boxes) & (labels >= 0)[..., None, None])
    assert ours["ap"] != evaluate_coco(dets, labels, boxes)["ap"]  # the mask IoUs, not the boxes', decided


def test_no_detections_score_zero():
    labels, boxes = random_scenes(1)
    empty = Detections(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    )
    ours = assert_agrees(labels, boxes, empty)
    assert ours["ap"] == ours["ar100"] == 0.0


def test_perfect_detections_score_one_and_duplicates_are_false_positives():
    labels, boxes = random_scenes(2)
    image, slot = torch.nonzero(labels >= 0, as_tuple=True)
    exact = Detections(image, boxes[image, slot], torch.linspace(1, 0.5, image.numel()), labels[image, slot])
    assert assert_agrees(labels, boxes, exact)["ap"] == pytest.approx(1.0)
    # Each box twice: the lower-scored copy finds its object taken and counts as a false positive. Ranked
    # after every true detection, the copies cost nothing; each just below its original, they cost AP.
    twice = Detections(*(torch.cat([v, v]) for v in (exact.image, exact.boxes, exact.scores, exact.labels)))
    twice.scores[image.numel() :] -= 0.6
    ours = assert_agrees(labels, boxes, twice)
    assert ours["ap"] == pytest.approx(1.0) and ours["ar100"] == pytest.approx(1.0)
    twice.scores[image.numel() :] += 0.6 - 1e-3
    ours = assert_agrees(labels, boxes, twice)
    assert ours["ap"] < 0.9 and ours["ar100"] == pytest.approx(1.0)


def test_a_class_absent_from_the_ground_truth_is_skipped():
    labels, boxes = random_scenes(4, absent=(3,))
    dets = random_detections(4, labels, boxes, wrong=0.5)
    assert (dets.labels == 3).any()  # class 3 is detected, but there is nothing to find
    ours = assert_agrees(labels, boxes, dets)
    assert math.isnan(ours["per_class_ap"][3])
    assert ours["ap"] == pytest.approx(np.nanmean(ours["per_class_ap"]))


def test_detections_in_scenes_without_objects_are_false_positives():
    labels, boxes = random_scenes(9)
    dets = random_detections(9, labels, boxes)
    labels[::3], boxes[::3] = -1, 0.0  # every third scene empty, its detections left
    assert torch.isin(dets.image, torch.arange(0, labels.shape[0], 3)).any()
    ours = assert_agrees(labels, boxes, dets)
    kept = ~torch.isin(dets.image, torch.arange(0, labels.shape[0], 3))
    without = Detections(dets.image[kept], dets.boxes[kept], dets.scores[kept], dets.labels[kept])
    assert ours["ap"] < evaluate_coco(without, labels, boxes)["ap"]


def test_a_class_absent_from_the_detections_scores_zero():
    labels, boxes = random_scenes(5)
    dets = random_detections(5, labels, boxes, absent=(labels[0, 0].item(),))
    ours = assert_agrees(labels, boxes, dets)
    assert ours["per_class_ap"][labels[0, 0]] == 0.0


def test_more_than_100_detections_per_image_and_class():
    labels, boxes = random_scenes(6, n=3, k=3)
    dets = random_detections(6, labels, boxes, per_gt=150, extra=40, wrong=0.0)
    counts = torch.bincount(dets.image * C + dets.labels)
    assert counts.max() > 100  # some (image, class) past the cut, whose worst detections are dropped
    assert_agrees(labels, boxes, dets)


def test_score_ties_follow_cocoeval_stable_order():
    labels, boxes = random_scenes(7, n=20)
    dets = random_detections(7, labels, boxes, per_gt=3, tie_decimals=1)
    assert torch.unique(dets.scores).numel() < len(dets) / 5
    assert_agrees(labels, boxes, dets)


def test_bad_input_is_named():
    labels, boxes = random_scenes(8, n=2)
    dets = random_detections(8, labels, boxes)
    with pytest.raises(TrainlabError, match="image indices"):
        evaluate_coco(Detections(dets.image + 5, dets.boxes, dets.scores, dets.labels), labels, boxes)
    with pytest.raises(TrainlabError, match="segm"):
        evaluate_coco(dets, labels, boxes, iou_type="segm")


def test_mask_iou_is_box_iou_for_box_shaped_masks():
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 40, (7, 2), generator=g)
    boxes = torch.cat([xy, xy + torch.randint(1, 24, (7, 2), generator=g)], 1).float()
    ys, xs = torch.arange(S)[:, None], torch.arange(S)[None, :]
    b = boxes[:, None, None, :]
    masks = (xs >= b[..., 0]) & (xs < b[..., 2]) & (ys >= b[..., 1]) & (ys < b[..., 3])
    assert torch.allclose(mask_iou(masks[:4], masks[2:]), box_iou(boxes[:4], boxes[2:]).double(), atol=1e-6)


def test_giou_is_iou_minus_the_empty_part_of_the_hull():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[3.0, 0, 4, 2], [1.0, 1, 3, 3], [0.0, 0, 2, 2]])
    # hull of a and b0 is 4 x 2 = 8, union 4 + 2 = 6: GIoU = 0 - 2/8; b1: IoU 1/7, hull 9: 1/7 - 2/9.
    expected = torch.tensor([[-0.25, 1 / 7 - 2 / 9, 1.0]])
    assert torch.allclose(generalized_box_iou(a, b), expected)
    assert torch.allclose(box_iou(a, b), torch.tensor([[0.0, 1 / 7, 1.0]]))


def reference_nms(boxes, scores, labels, iou):
    """Greedy NMS, one box at a time."""
    order, keep = torch.argsort(-scores, stable=True).tolist(), []
    for i in order:
        if all(labels[j] != labels[i] or box_iou(boxes[j][None], boxes[i][None]) <= iou for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_is_greedy_nms(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(80, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 5 + torch.rand(80, 2, generator=g) * 15], 1)
    scores, labels = torch.rand(80, generator=g), torch.randint(0, 3, (80,), generator=g)
    kept = batched_nms(boxes, scores, labels, 0.3)
    assert torch.equal(kept, reference_nms(boxes, scores, labels, 0.3))
    assert 10 < kept.numel() < 70  # overlaps suppressed some, not all


def test_an_iou_tie_takes_the_later_object_as_cocoeval_does():
    # Objects A and B overlap; the first detection sits exactly between them (IoU 9/11 with each) and takes
    # B, the later one; the second, A itself, then finds A free (IoU 1). Up to t = .80 both are hits; above,
    # the first misses and the second, ranked after it, gives precision 1/2 up to recall 1/2 (51 of the 101
    # points). Taking A first would leave the second only B, at IoU 2/3: a miss from t = .70 on.
    labels = torch.tensor([[0, 0]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [2.0, 0, 12, 10]]])
    dets = Detections(torch.tensor([0, 0]), torch.tensor([[1.0, 0, 11, 10], [0.0, 0, 10, 10]]),
                      torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))  # fmt: skip
    assert assert_agrees(labels, boxes, dets)["ap"] == pytest.approx((7 + 3 * 0.5 * 51 / 101) / 10)
