"""trainlab's COCO evaluator against torchmetrics' MeanAveragePrecision and pycocotools' COCOeval, in one run
on the same detections: seconds, ratios, and the agreement of the numbers (docs/coco_eval.md).

    python bench/coco_eval_speed.py [--images 5000] [--threads 1] [--seed 0] [--no-torchmetrics]

The scenes are synthetic and seeded, shaped like the fmnist-scenes test split: 64 x 64 canvases with 1 to
6 objects (3.5 on average) of 10 classes, boxes 10 to 40 pixels wide. Each image has 20 to 100 detections:
1 to 3 noisy copies of each object (box noise 10% of its size, 10% of them with a wrong class, scores
higher the closer the copy), the rest false positives at random places with lower scores. Each timing
starts from data in the library's own input format (trainlab's Detections, torchmetrics' per-image dicts,
the COCO dicts for pycocotools) and ends with the summary numbers. The goal: trainlab >= 10x faster than
torchmetrics.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types

import torch

from trainlab.tasks.boxes import box_iou
from trainlab.tasks.coco_eval import Detections, evaluate_coco, to_coco_results

S, K, C = 64, 6, 10  # canvas, object slots, classes


def synthetic_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, Detections]:
    """(gt_labels (n, K), gt_boxes (n, K, 4), detections), as the module docstring describes."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(1, K + 1, (n, 1), generator=g)
    labels = torch.where(torch.arange(K) < count, torch.randint(0, C, (n, K), generator=g), -1)
    wh = 10 + torch.rand(n, K, 2, generator=g) * 30
    xy = torch.rand(n, K, 2, generator=g) * (S - wh)
    boxes = torch.cat([xy, xy + wh], -1).where(labels[..., None] >= 0, 0.0)
    per_image = torch.randint(20, 101, (n,), generator=g)
    image = torch.repeat_interleave(torch.arange(n), per_image)
    j = torch.arange(image.numel()) - torch.repeat_interleave(
        torch.cumsum(per_image, 0) - per_image, per_image
    )
    copies = torch.randint(1, 4, (n,), generator=g)
    true = j < (count[:, 0] * copies)[image]  # the first count * copies detections copy an object each
    slot = j % count[image, 0]
    gt = boxes[image, slot]
    noise = torch.randn(gt.shape, generator=g) * 0.1 * (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
    fp_wh = 6 + torch.rand(image.numel(), 2, generator=g) * 30
    fp_xy = torch.rand(image.numel(), 2, generator=g) * (S - fp_wh)
    det_boxes = torch.where(true[:, None], gt + noise, torch.cat([fp_xy, fp_xy + fp_wh], 1))
    det_boxes = torch.cat([det_boxes[:, :2], torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)], 1)
    wrong = torch.rand(image.numel(), generator=g) < 0.1
    det_labels = torch.where(
        true & ~wrong, labels[image, slot], torch.randint(0, C, (image.numel(),), generator=g)
    )
    closeness = box_iou(det_boxes[:, None], gt[:, None])[:, 0, 0]
    jitter = torch.rand(image.numel(), generator=g)
    scores = torch.where(true, 0.3 + 0.5 * closeness + 0.2 * jitter, 0.6 * jitter**2)
    return labels, boxes, Detections(image, det_boxes, scores.float(), det_labels)


def time_trainlab(labels, boxes, dets) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = evaluate_coco(dets, labels, boxes)
    return time.perf_counter() - start, metrics


def coco_ground_truth(labels: torch.Tensor, boxes: torch.Tensor) -> dict:
    """The COCO instances dict of the split, with the ids of trainlab's scene export."""
    annotations = []
    for i, k in torch.nonzero(labels >= 0).tolist():
        x1, y1, x2, y2 = boxes[i, k].double().tolist()
        annotations.append({
            "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(labels[i, k]) + 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
        })  # fmt: skip
    return {
        "images": [{"id": i + 1, "width": S, "height": S} for i in range(labels.shape[0])],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(C)],
        "annotations": annotations,
    }


def time_pycocotools(labels, boxes, dets) -> tuple[float, dict]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = coco_ground_truth(labels, boxes), to_coco_results(dets)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    seconds = time.perf_counter() - start
    return seconds, {"ap": ev.stats[0], "ap50": ev.stats[1], "ap75": ev.stats[2], "ar100": ev.stats[8]}


def torchmetrics_map() -> type | None:
    """torchmetrics' MeanAveragePrecision, or None. Its pycocotools backend needs torchvision only for
    torchvision.ops.box_convert; where torchvision cannot load (a wheel built for another torch), that one
    function is stood in for (xyxy -> xywh, a subtraction) and the bench says so."""
    try:
        import torchmetrics.detection.mean_ap as mean_ap
    except ImportError:
        return None
    try:
        import torchvision.ops  # noqa: F401
    except Exception as error:
        print(f"note: torchvision does not load ({type(error).__name__}); box_convert stood in for it")
        ops = types.ModuleType("torchvision.ops")
        ops.box_convert = lambda b, in_fmt, out_fmt: torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1)
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = types.ModuleType("torchvision"), ops
        mean_ap._TORCHVISION_AVAILABLE = True
    return mean_ap.MeanAveragePrecision


def time_torchmetrics(metric_class, labels, boxes, dets) -> tuple[float, dict]:
    order = torch.argsort(dets.image, stable=True)
    splits = torch.bincount(dets.image, minlength=labels.shape[0]).tolist()
    preds = [
        {"boxes": b, "scores": s, "labels": c}
        for b, s, c in zip(
            *(t[order].split(splits) for t in (dets.boxes, dets.scores, dets.labels)), strict=True
        )
    ]
    valid = labels >= 0
    target = [{"boxes": boxes[i][valid[i]], "labels": labels[i][valid[i]]} for i in range(labels.shape[0])]
    start = time.perf_counter()
    metric = metric_class(iou_type="bbox")
    metric.update(preds, target)
    with contextlib.redirect_stdout(io.StringIO()):
        out = metric.compute()
    seconds = time.perf_counter() - start
    return seconds, {"ap": out["map"], "ap50": out["map_50"], "ap75": out["map_75"], "ar100": out["mar_100"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torchmetrics", action="store_true", help="compare with pycocotools only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        print("pycocotools is not installed (pip install -e '.[coco]'): it is the reference to agree with")
        return 1
    metric_class = None if args.no_torchmetrics else torchmetrics_map()
    if metric_class is None and not args.no_torchmetrics:
        print("torchmetrics is not installed (pip install -e '.[peers]'); --no-torchmetrics skips it")
        return 1
    labels, boxes, dets = synthetic_split(args.images, args.seed)
    objects = int((labels >= 0).sum())
    print(f"{args.images} images, {objects} objects, {len(dets)} detections, {args.threads} thread(s)")
    rows = {
        "trainlab": time_trainlab(labels, boxes, dets),
        "pycocotools": time_pycocotools(labels, boxes, dets),
    }
    if metric_class is not None:
        rows["torchmetrics"] = time_torchmetrics(metric_class, labels, boxes, dets)
    ours = rows["trainlab"][0]
    print(f"{'':14}{'seconds':>9}{'vs trainlab':>13}{'AP':>9}{'AP50':>9}{'AP75':>9}{'AR@100':>9}")
    for name, (seconds, m) in rows.items():
        numbers = "".join(f"{float(m[key]):9.4f}" for key in ("ap", "ap50", "ap75", "ar100"))
        print(f"{name:14}{seconds:9.2f}{seconds / ours:12.1f}x{numbers}")
    reference = rows["pycocotools"][1]
    for name, (_, m) in (item for item in rows.items() if item[0] != "pycocotools"):
        worst = max(abs(float(m[key]) - float(reference[key])) for key in reference)
        print(f"max |{name} - pycocotools| over AP, AP50, AP75, AR@100: {worst:.2e}")
    if "torchmetrics" in rows:
        print(f"speed-up over torchmetrics: {rows['torchmetrics'][0] / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
