"""`trainlab data export fmnist-scenes --format coco`: a split as PNG files and a COCO instances JSON
(Lin et al. 2014), so that any COCO tool (pycocotools, torchmetrics, FiftyOne) reads the scenes and
scores trainlab's detections.

Ids are the ones every part of trainlab uses: image_id = scene index in its split + 1, category_id =
class + 1, annotation id = a running count + 1 (scenes in order, items in slot order). Boxes are COCO's
[x, y, width, height] in pixels (from the xyxy boxes, x2 = last column + 1), masks compressed RLE, and
`area` is the mask's pixel count.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import torch
from PIL import Image

from trainlab.data import rle
from trainlab.data.scenes import Scenes, load_scenes, scene_settings
from trainlab.errors import ConfigError
from trainlab.io import atomic_write_json


def coco_instances(scenes: Scenes, file_names: list[str]) -> dict:
    """The COCO instances dict of `scenes` (images, annotations with RLE masks, categories)."""
    n, _, h, w = scenes.images.shape
    images = [{"id": i + 1, "file_name": name, "height": h, "width": w} for i, name in enumerate(file_names)]
    scene, slot = (scenes.labels >= 0).nonzero(as_tuple=True)  # row-major: scenes, then slots in order
    boxes = scenes.boxes[scene, slot]
    xywh = torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1).tolist()
    labels = scenes.labels[scene, slot].tolist()
    segmentations = []
    for part in torch.arange(len(scene)).split(1024):  # the masks a thousand at a time: bounded memory
        ids = (slot[part] + 1).to(torch.uint8)[:, None, None]
        segmentations += rle.encode(scenes.instances[scene[part]] == ids)
    areas = rle.area(segmentations)
    annotations = [
        {
            "id": a + 1,
            "image_id": i + 1,
            "category_id": label + 1,
            "bbox": box,
            "area": area,
            "iscrowd": 0,
            "segmentation": segmentation,
        }
        for a, (i, label, box, area, segmentation) in enumerate(
            zip(scene.tolist(), labels, xywh, areas, segmentations, strict=True)
        )
    ]
    categories = [
        {"id": c + 1, "name": name, "supercategory": "fashion"} for c, name in enumerate(scenes.classes)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def export_coco(scenes: Scenes, out: Path | str, split: str) -> Path:
    """Write out/images/NNNNNN.png (NNNNNN = image_id) and out/instances_<split>.json; return the JSON's
    path. The PNG files go into a fresh hidden folder that then replaces out/images (one rename, not
    thousands of fsyncs), and the JSON is written atomically last, so a JSON always has its images."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".images.{secrets.token_hex(8)}.tmp"
    staging.mkdir()  # like any output folder: the umask decides its mode
    try:
        for i, image in enumerate(scenes.images[:, 0].cpu().numpy()):
            Image.fromarray(image).save(staging / f"{i + 1:06d}.png", format="PNG")
        if (out / "images").exists():
            old = out / f".images.{secrets.token_hex(8)}.old"
            (out / "images").rename(old)
            shutil.rmtree(old)
        staging.rename(out / "images")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    path = out / f"instances_{split}.json"
    atomic_write_json(path, coco_instances(scenes, [f"images/{i + 1:06d}.png" for i in range(len(scenes))]))
    return path


def export_command(name: str, split: str, fmt: str, out: str, n: int | None = None) -> str:
    """`trainlab data export NAME --split SPLIT --format coco --out DIR [--n N]` -> a one-line message."""
    if fmt != "coco":
        raise ConfigError(f"data export --format {fmt!r}: expected 'coco'")
    options = {} if n is None else {"n": n}
    scene_settings(name, split, options)  # a bad name or split fails before anything is generated
    scenes = load_scenes(name, split, **options)
    path = export_coco(scenes, out, split)
    items = int((scenes.labels >= 0).sum())
    return f"wrote {path} and {len(scenes)} PNG files in {Path(out) / 'images'}: {items} items"
