"""`trainlab augment preview`: a PNG grid of augmented images, one row per image.

Each row starts with the original, followed by `n_aug` augmented versions. Every augmented version is
a separate sample of one batch, so the grid also shows that parameters are drawn per sample. Small
images are enlarged (nearest neighbour) so that a 28x28 digit stays readable.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainlab.data import formats
from trainlab.data.augment.pipeline import Augment
from trainlab.errors import ConfigError, DataError
from trainlab.io import atomic_write_bytes

GAP = 2  # pixels between tiles
MIN_TILE = 96  # enlarge smaller images to at least this many pixels


def load_image(path: str) -> torch.Tensor:
    """Any image Pillow reads, as (1, C, H, W) uint8 with C = 1 (grey) or 3, converted exactly as an
    image folder is for training (formats.load_image: 16-bit grey scaled by 1/257, not clipped)."""
    try:
        channels, size = formats.folder_geometry([Path(path)])
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(formats.load_image(Path(path), channels, size))[None]


def pick_images(dataset: str, n_images: int, seed: int) -> tuple[torch.Tensor, int]:
    from trainlab.data.datasets import load_dataset

    data = load_dataset(dataset)
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.train_images), generator=g)[:n_images]
    return data.train_images[index], len(data.classes)


def tile_grid(rows: torch.Tensor) -> np.ndarray:
    """(R, K, C, H, W) uint8 -> one (H', W', 3) uint8 picture with gaps, tiles enlarged if small."""
    r, k, c, h, w = rows.shape
    zoom = max(1, -(-MIN_TILE // max(h, w)))
    tiles = rows.repeat_interleave(zoom, 3).repeat_interleave(zoom, 4).expand(r, k, 3, h * zoom, w * zoom)
    th, tw = h * zoom, w * zoom
    grid = torch.full((3, r * (th + GAP) + GAP, k * (tw + GAP) + GAP), 255, dtype=torch.uint8)
    for i in range(r):
        for j in range(k):
            top, left = GAP + i * (th + GAP), GAP + j * (tw + GAP)
            grid[:, top : top + th, left : left + tw] = tiles[i, j]
    return grid.permute(1, 2, 0).numpy()


def save_png_atomically(picture: np.ndarray, out: str) -> None:
    """Through trainlab.io, so the file honours the umask like every other output."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def preview_command(
    dataset: str | None,
    image: str | None,
    spec: str,
    out: str,
    n_images: int = 6,
    n_aug: int = 8,
    seed: int = 0,
) -> str:
    """Write the preview grid to `out` (PNG, atomically) and return a one-line message."""
    if not spec or not str(spec).strip():
        raise ConfigError("nothing to preview: the augmentation spec is empty")
    if n_images < 1 or n_aug < 1:
        raise ConfigError(f"n_images and n_aug must be at least 1, got {n_images} and {n_aug}")
    if image:
        originals, num_classes = load_image(image), 1
    elif dataset:
        originals, num_classes = pick_images(dataset, n_images, seed)
    else:
        raise ConfigError("augment preview needs --dataset NAME or --image FILE")
    save_png_atomically(preview_grid(originals, spec, n_aug, seed, num_classes), out)
    source = image or dataset
    return f"wrote {out}: {len(originals)} image(s) of {source}, each with {n_aug} augmentations of {spec!r}"


def preview_grid(originals: torch.Tensor, spec: str, n_aug: int, seed: int, num_classes: int) -> np.ndarray:
    """uint8 images (N, C, H, W) -> the (H', W', 3) grid: per row an original, then n_aug augmented."""
    n, c, h, w = originals.shape
    aug = Augment(spec, seed=seed, num_classes=max(num_classes, 2))
    batch = originals.repeat_interleave(n_aug, 0)  # (n * n_aug, C, H, W)
    augmented, _ = aug(batch, torch.zeros(len(batch), dtype=torch.long))
    rows = torch.cat((originals[:, None], augmented.view(n, n_aug, c, h, w)), 1)
    return tile_grid(rows)
