"""Readers for the on-disk dataset formats, with strict validation.

- idx (LeCun's MNIST format, also Fashion-MNIST): raw or gzip; magic number, declared dimensions
  against the actual bytes.
- CIFAR-10/100 *binary* version: fixed-size records, <label bytes><3072 pixel bytes>; no pickle.
- image folders: one subfolder per class, PNG/JPEG/BMP, read with Pillow (see `to_pixels` for the
  documented mode conversions).

Every problem raises DataError with one line that names the file and what was expected.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainlab.errors import DataError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; corrupt or truncated gzip is a DataError."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if str(path).endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    return data


def read_idx(path: Path) -> np.ndarray:
    """An idx file as an array: magic 0x0000TTDD (T = element type, D = number of dimensions)."""
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path}: not an idx file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx header (expected {header} bytes, got {len(data)})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header declares shape {shape} ({expected} bytes of data), but the file holds "
            f"{len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_cifar_binary(paths: list[Path], label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary batches -> (images (N, 3, 32, 32) uint8, labels (N,) int64).

    CIFAR-10 records have 1 label byte; CIFAR-100 records have 2 (coarse, fine): `label_index` picks one.
    """
    record = label_bytes + 3 * 32 * 32
    images, labels = [], []
    for path in paths:
        data = read_bytes(path)
        if not data or len(data) % record:
            raise DataError(f"{path}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records")
        rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
        labels.append(rows[:, label_index].astype(np.int64))
        images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def check_labels(labels: np.ndarray, num_classes: int, path: Path | str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: label {int(labels.max() if labels.max() >= num_classes else labels.min())} is out of "
            f"range (expected 0..{num_classes - 1})"
        )


def to_pixels(image: Image.Image, channels: int) -> np.ndarray:
    """A Pillow image -> (channels, H, W) uint8, converting modes explicitly:

    - 16-bit grayscale (I;16, I) is scaled to 8 bits by value / 257 (65535 -> 255), not clipped;
    - palette (P) images are expanded through their palette (RGBA if the palette has transparency);
    - RGBA / LA are composited onto a black background (transparent pixels become 0, like padding);
    - then converted to L (1 channel, ITU-R 601 luma) or RGB (3 channels, grey replicated).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.array(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def load_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image file converted exactly as training data is: mode conversion, then resize to (H, W)."""
    image = open_image(path)
    pixels = to_pixels(image, channels)
    if pixels.shape[1:] != tuple(size):
        resized = [Image.fromarray(c).resize((size[1], size[0]), Image.BILINEAR) for c in pixels]
        pixels = np.stack([np.asarray(c) for c in resized])
    return pixels


def scan_image_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of a folder with one subfolder per class, classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected one subfolder per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"{root}: no PNG/JPEG/BMP images found in class subfolders")
    return files, np.asarray(labels, dtype=np.int64), classes


def folder_geometry(files: list[Path]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) for a folder: 1 channel if every image is grey, else 3; the first image's size."""
    channels = 1
    for path in files:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("L", "I;16", "I;16B", "I;16L", "I", "1", "LA"):
                channels = 3
                break
    with Image.open(files[0]) as first:
        size = (first.height, first.width)
    return channels, size
