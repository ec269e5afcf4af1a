"""Using a finished scenes run (trainlab.vision_run): `trainlab predict RUN image.png --out drawn.png
[--json]` and `trainlab eval RUN [--coco-json FILE]`.

Prediction goes through the run's own inference path (trainlab.predict.load_trained: the verified model
file, its preprocessing and precision). An image of any size is converted to grey and resized to the
run's canvas (S x S), exactly as load_image converts training data; the boxes are scaled back to the
image's own pixels, and masks resized to it by nearest neighbour. The JSON of one image:

    {"file", "width", "height",
     "boxes": [[x1, y1, x2, y2], ...] (pixels, COCO's convention), "scores": [...], "labels": [...],
     "classes": [...] (names), "masks": [RLE, ...] (instance runs; COCO compressed RLE)}

A segmentation run gives {"file", "width", "height", "segments": [{"label", "class", "mask": RLE}]},
one per class present. Detections below vision_run.SHOWN_SCORE are left out (the evaluation keeps them all).

`eval` recomputes the test metrics of summary.json on the run's test split; `--coco-json` writes the
detections in COCO's results format, with the image ids of `trainlab data export` (scene index + 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainlab.data import formats, rle
from trainlab.errors import TrainlabError
from trainlab.inference import evaluate_outputs
from trainlab.io import atomic_write_bytes, atomic_write_json, read_json
from trainlab.predict import TrainedModel, load_trained
from trainlab.tasks.coco_eval import Detections, to_coco_results
from trainlab.vision_run import (
    SHOWN_SCORE,
    VISION_TASKS,
    detections_picture,
    load_splits,
    png_bytes,
    scene_loader,
    semantic_picture,
)


def is_vision_dir(run_dir: Path | str) -> bool:
    """Whether `run_dir` holds a scenes run (its config.json names a vision task)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return False
    task = read_json(path).get("task")
    return isinstance(task, dict) and task.get("name") in VISION_TASKS


def read_image(path: Path) -> np.ndarray:
    """(1, H, W) uint8, grey, at the file's own size."""
    with formats.image_header(path) as image:
        image.load()
        return formats.to_pixels(image, 1)


def predict_image(
    trained: TrainedModel, path: Path, out: Path | None = None, min_score: float = SHOWN_SCORE
) -> dict[str, Any]:
    """The objects (or segments) in one image file, those of at least `min_score`; with `out`, the
    image with them drawn."""
    pixels = torch.from_numpy(read_image(path))
    height, width = pixels.shape[1:]
    side = trained.image_shape[1]
    canvas = F.interpolate(pixels[None].float(), size=(side, side), mode="bilinear", antialias=True)
    canvas = canvas.round().clamp(0, 255).to(torch.uint8)
    outputs = trained.outputs(canvas)
    if not torch.isfinite(outputs).all():
        raise TrainlabError(f"{path}: the model's outputs for this image are not finite")
    task = trained.predictor.task
    entry: dict[str, Any] = {"file": str(path), "width": int(width), "height": int(height)}
    if not hasattr(task, "decode"):
        classes = task.predict(outputs)[0].cpu()  # (S, S): 0 background, c + 1 class c
        classes = resize_nearest(classes[None].float(), height, width)[0].long()
        present = [int(c) for c in classes.unique() if c > 0]
        masks = (
            torch.stack([classes == c for c in present])
            if present
            else torch.zeros(0, height, width, dtype=torch.bool)
        )
        entry["segments"] = [
            {"label": c - 1, "class": trained.classes[c - 1], "mask": m}
            for c, m in zip(present, rle.encode(masks))
        ]
        if out is not None:
            atomic_write_bytes(out, png_bytes(semantic_picture(pixels[None], classes[None], trained.classes)))
        return entry
    dets = task.decode(outputs)
    keep = dets.scores >= min_score
    scale = torch.tensor([width / side, height / side] * 2)
    boxes = dets.boxes[keep].cpu() * scale
    shown = Detections(dets.image[keep].cpu(), boxes, dets.scores[keep].cpu(), dets.labels[keep].cpu())
    entry |= {
        "boxes": [[round(v, 2) for v in box] for box in boxes.tolist()],
        "scores": [round(s, 4) for s in shown.scores.tolist()],
        "labels": shown.labels.tolist(),
        "classes": [trained.classes[i] for i in shown.labels.tolist()],
    }
    if dets.masks is not None:
        shown.masks = resize_nearest(dets.masks[keep].float().cpu(), height, width).bool()
        entry["masks"] = rle.encode(shown.masks)
    if out is not None:
        atomic_write_bytes(
            out, png_bytes(detections_picture(pixels[None], shown, trained.classes, min_score))
        )
    return entry


def resize_nearest(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, s, s) -> (N, height, width), nearest neighbour."""
    if maps.shape[-2:] == (height, width):
        return maps
    return F.interpolate(maps[:, None], size=(height, width), mode="nearest")[:, 0]


def evaluate_vision_run(run_dir: Path | str, device: str = "auto", coco_json: Path | None = None) -> dict:
    """The run's test metrics by its own inference path; with `coco_json`, its test detections written
    there in COCO's results format."""
    trained = load_trained(run_dir, device)
    cfg, task = trained.config, trained.predictor.task
    test = load_splits(cfg, only="test")["test"]
    outputs, targets = trained.predictor.run(
        scene_loader(test, cfg.data.eval_batch_size, trained.device, False, 0)
    )
    result = evaluate_outputs(task, outputs, targets, trained.classes)
    if coco_json is not None:
        if not hasattr(task, "decode"):
            raise TrainlabError(f"--coco-json: a {task.name} run has no detections (it labels pixels)")
        dets = task.decode(outputs)
        atomic_write_json(coco_json, to_coco_results(dets, with_masks=dets.masks is not None))
        result["coco_json"] = str(coco_json)
    return {**result, "classes": trained.classes}


def predict_vision_files(
    run_dir: Path | str,
    files: list[str],
    out: Path | str | None = None,
    device: str = "auto",
    min_score: float = SHOWN_SCORE,
) -> list[dict[str, Any]]:
    """predict_image for each file, in order; a file that cannot be read costs only its own entry
    ({"file", "error": one line}). `out` draws the one file given."""
    if out is not None and len(files) != 1:
        raise TrainlabError(f"--out draws one image: give one file, not {len(files)}")
    trained = load_trained(run_dir, device)
    results = []
    for name in files:
        try:
            drawn = Path(out) if out is not None else None
            results.append(predict_image(trained, Path(name), drawn, min_score))
        except (TrainlabError, OSError) as e:
            results.append({"file": str(name), "error": str(e)})
    return results
