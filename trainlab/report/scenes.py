"""Scenes with their boxes, labels and masks drawn on them: `trainlab data preview`, and predictions
(`trainlab predict`, the vision runs' figures) drawn the same way.

Each item gets its class colour (matplotlib's tab10 palette): the mask as a translucent fill, the box
as an outline, and the class name (and score, for predictions) on a tag above the box. Tiles are
enlarged by nearest neighbour so that a 64 x 64 scene and its text stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from trainlab.data.augment.preview import save_png_atomically
from trainlab.data.scenes import load_scenes

PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    ],
    dtype=np.float32,
)  # fmt: skip
GAP = 4  # pixels between tiles
MIN_TILE = 192  # smaller scenes are enlarged to at least this side
MASK_ALPHA = 0.45


def draw_scenes(
    images: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor | Sequence[torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
    scores: torch.Tensor | Sequence[torch.Tensor] | None = None,
    classes: Sequence[str] | None = None,
    cols: int = 8,
) -> Image.Image:
    """uint8 images (N, 1 or 3, S, S) and, per image i, boxes[i] (K_i, 4) xyxy pixels, labels[i] (K_i,)
    (a label below 0 is an empty slot and is skipped), optional masks[i] (K_i, S, S) bool and
    scores[i] (K_i,) -> one RGB picture, `cols` scenes a row. Padded (N, K, ...) tensors and lists of
    per-image tensors both work."""
    n, c, h, w = images.shape
    zoom = max(1, -(-MIN_TILE // max(h, w)))
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    grid = np.full((rows * (h * zoom + GAP) + GAP, cols * (w * zoom + GAP) + GAP, 3), 255, np.uint8)
    tags = []  # (x, y, colour, text) drawn after the pixels
    for i in range(n):
        tile = images[i].detach().cpu().expand(3, h, w).permute(1, 2, 0).numpy().astype(np.float32)
        keep = (torch.as_tensor(labels[i]).cpu() >= 0).numpy()
        item_labels = torch.as_tensor(labels[i]).cpu().numpy()[keep]
        if masks is not None:
            for mask, label in zip(torch.as_tensor(masks[i]).cpu().numpy()[keep], item_labels):
                tile[mask] = (1 - MASK_ALPHA) * tile[mask] + MASK_ALPHA * PALETTE[label % len(PALETTE)]
        top, left = GAP + (i // cols) * (h * zoom + GAP), GAP + (i % cols) * (w * zoom + GAP)
        big = tile.round().astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1)
        grid[top : top + h * zoom, left : left + w * zoom] = big
        item_boxes = torch.as_tensor(boxes[i]).cpu().float().numpy()[keep]
        item_scores = torch.as_tensor(scores[i]).cpu().numpy()[keep] if scores is not None else None
        for j, (box, label) in enumerate(zip(item_boxes, item_labels)):
            name = classes[label] if classes is not None else str(label)
            text = name if item_scores is None else f"{name} {item_scores[j]:.2f}"
            x1, y1, x2, y2 = (
                left + box[0] * zoom,
                top + box[1] * zoom,
                left + box[2] * zoom,
                top + box[3] * zoom,
            )
            colour = tuple(int(v) for v in PALETTE[label % len(PALETTE)])
            tags.append(((x1, y1, x2 - 1, y2 - 1), colour, text, top))
    picture = Image.fromarray(grid)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, zoom * 4))
    for rect, colour, text, tile_top in tags:
        draw.rectangle(rect, outline=colour, width=2)
        x, y = rect[0], rect[1]
        anchor = "lb" if draw.textbbox((x, y), text, font=font, anchor="lb")[1] >= tile_top else "lt"
        tx1, ty1, tx2, ty2 = draw.textbbox((x, y), text, font=font, anchor=anchor)  # above the box if it fits
        draw.rectangle((tx1 - 1, ty1 - 1, tx2 + 1, ty2 + 1), fill=colour)
        draw.text((x, y), text, fill=(255, 255, 255), font=font, anchor=anchor)
    return picture


def preview_command(name: str, split: str, out: str, n: int | None = None, shown: int = 16) -> str:
    """`trainlab data preview NAME --split SPLIT --out grid.png [--n N]`: the split's first `shown`
    scenes with their boxes, labels and masks, written atomically as PNG -> a one-line message."""
    scenes = load_scenes(name, split, **({} if n is None else {"n": n})).index(slice(0, shown))
    picture = draw_scenes(
        scenes.images, scenes.boxes, scenes.labels, scenes.masks(), classes=scenes.classes, cols=4
    )
    save_png_atomically(np.asarray(picture), out)
    return f"wrote {out}: the first {len(scenes)} scenes of {name} {split} with their boxes, labels and masks"
