"""`digits`: scikit-learn's 1,797 handwritten digits (UCI "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak 1998), read from the CSV that ships inside the scikit-learn wheel.

`sklearn/datasets/data/digits.csv.gz` holds one image a row: 64 pixel values (8x8, row-major, each an
integer 0..16, the count of set pixels in a 4x4 block of the original 32x32 bitmap) and the label 0..9.
The file is located with importlib without importing scikit-learn (whose import pulls in SciPy), so
scikit-learn is an optional extra: `pip install 'trainlab[digits]'`.

Images are resized to the 1x28x28 of Fashion-MNIST, so that a model trained on one takes the other:
- grey levels: v -> v * 255 / 16 (0 -> 0, 16 -> 255);
- filter: area (box) resampling, out = A @ img @ A^T with A[o, i] the overlap of output pixel o's
  footprint [o * 8/28, (o + 1) * 8/28) with input pixel [i, i + 1), over the footprint's length. Each
  output pixel is the mean of the input over its footprint, so the image's mean grey level is kept
  exactly (before rounding to uint8, which moves each pixel by at most 1/2);
- rounding to the nearest integer, as uint8.

Split (deterministic, no random draw): within each class, in file order, every 5th image (the 5th,
10th, ...) is a test image; the other 4 of 5 train. That is 1,442 training and 355 test images, each
class split 80/20.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from trainlab.errors import DataError

DIGITS_CSV = Path("datasets") / "data" / "digits.csv.gz"  # inside the sklearn package
RAW_SIDE, SIDE, LEVELS = 8, 28, 16
NUM_IMAGES = 1797
TEST_EVERY = 5  # within each class, every 5th image is a test image
CLASSES = [str(i) for i in range(10)]


def digits_csv() -> Path:
    """The CSV inside the installed scikit-learn, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("dataset 'digits' needs scikit-learn: pip install 'trainlab[digits]'")
    path = Path(spec.origin).parent / DIGITS_CSV
    if not path.is_file():
        raise DataError(f"{path}: not found in the installed scikit-learn (expected its digits CSV)")
    return path


def read_digits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 8, 8) uint8 in 0..16, labels (1797,) int64), validated; DataError naming the file."""
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a readable digits CSV ({' '.join(str(e).split())[:200]})") from None
    if rows.shape != (NUM_IMAGES, RAW_SIDE * RAW_SIDE + 1):
        raise DataError(
            f"{path}: {rows.shape[0]} rows of {rows.shape[1]} values, expected {NUM_IMAGES} of 65"
        )
    if not np.array_equal(rows, np.round(rows)) or rows.min() < 0 or rows[:, :-1].max() > LEVELS:
        raise DataError(f"{path}: pixel values must be integers 0..{LEVELS}")
    if rows[:, -1].max() > 9:
        raise DataError(f"{path}: labels must be 0..9")
    pixels = rows[:, :-1].astype(np.uint8).reshape(-1, RAW_SIDE, RAW_SIDE)
    return pixels, rows[:, -1].astype(np.int64)


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): row o averages the input over output pixel o's footprint (rows sum to 1)."""
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64) * scale  # footprint bounds in input pixels
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = torch.arange(n_in, dtype=torch.float64)[None]
    overlap = (torch.minimum(hi, pixel + 1) - torch.maximum(lo, pixel)).clamp_min(0)
    return overlap / scale


def resize_area(pixels: np.ndarray, side: int = SIDE) -> torch.Tensor:
    """(N, 8, 8) grey levels 0..16 -> (N, 1, side, side) uint8 0..255, by area resampling."""
    a = area_matrix(pixels.shape[-1], side)
    images = a @ torch.from_numpy(pixels).double() @ a.T * (255 / LEVELS)  # (N, side, side)
    return images.round().clamp(0, 255).to(torch.uint8)[:, None]


def held_out_mask(labels: np.ndarray) -> np.ndarray:
    """True for the test images: every TEST_EVERY-th image of each class, in file order."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        (where,) = np.nonzero(labels == c)
        mask[where[TEST_EVERY - 1 :: TEST_EVERY]] = True
    return mask


def load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Path]:
    """(train images, train labels, test images, test labels, the CSV's path): images (N, 1, 28, 28)."""
    path = digits_csv()
    pixels, labels = read_digits_csv(path)
    images, test = resize_area(pixels), held_out_mask(labels)
    y = torch.from_numpy(labels)
    train = torch.from_numpy(~test)
    return images[train], y[train], images[~train], y[~train], path
