"""Readers for the on-disk dataset formats, with strict validation.

- idx (LeCun's MNIST format, also Fashion-MNIST): raw or gzip; magic number, declared dimensions
  against the actual bytes; every idx element type, converted explicitly (`idx_pixels`, `idx_labels`).
- CIFAR-10/100 *binary* version: fixed-size records, <label bytes><3072 pixel bytes>; no pickle.
- image folders: one subfolder per class, PNG/JPEG/BMP, read with Pillow (see `to_pixels` for the
  documented mode conversions).

Every problem raises DataError with one line that names the file and what was expected. Hostile files
are refused before anything large is allocated:
- only regular files are opened (a FIFO named x.png would block `open` forever);
- an idx header's size is computed in Python integers (int64 wraps: dims (2^31, 2^31, 4) -> 0 bytes)
  and checked against the file's size, or for gzip against deflate's largest ratio; the data is then
  streamed, inflating at most the declared size and one byte (a gzip bomb stops there);
- an image's pixel count is read from its header (Pillow's lazy open) and checked against
  `max_image_pixels()` before a pixel is decoded.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainlab.errors import ConfigError, DataError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_MAX_DIMS = 32  # NumPy 1's limit (NumPy 2 allows 64); images have 3, labels 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GREY_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "1", "LA")
# Deflate (RFC 1951) codes at best one 258-byte match in 2 bits, so a gzip file of n bytes inflates to
# at most 1032 n bytes: a header declaring more cannot be honest, and is refused before allocating.
DEFLATE_MAX_RATIO = 1032
READ_CHUNK = 1 << 20  # bytes inflated per read: the most a gzip bomb inflates past its declared size
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # 16.8 Mpx: a 12 Mpx photo fits; decoding peaks at ~0.42 GB
# What Pillow raises on malformed files besides OSError (UnidentifiedImageError, truncated data).
PILLOW_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file (symlinks followed). O_NONBLOCK makes opening a
    FIFO return at once instead of waiting for a writer, so that fstat can refuse it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a device or socket"
        )
        raise DataError(f"{path}: not a regular file (found {kind}; expected a data file)")
    return os.fdopen(fd, "rb")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; corrupt or truncated gzip is a DataError."""
    with open_regular(path) as f:
        data = f.read()
    if str(path).endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    return data


def read_upto(stream: BinaryIO, out: np.ndarray) -> int:
    """Fill the uint8 array `out` from `stream` chunk by chunk; the number of bytes read (short at EOF)."""
    view, got = memoryview(out), 0
    while got < len(view):
        n = stream.readinto(view[got : got + READ_CHUNK])
        if not n:
            break
        got += n
    return got


def read_idx(path: Path) -> np.ndarray:
    """An idx file as an array of its declared element type (native byte order).

    Layout: magic 0x0000TTDD (T = element type, D = number of dimensions), D big-endian uint32 sizes,
    then the elements, big-endian. A gzip file is streamed: the header first, then exactly the data.
    """
    path = Path(path)
    with open_regular(path) as raw:
        size = os.fstat(raw.fileno()).st_size
        if not path.name.endswith(".gz"):
            return parse_idx(raw, path, size, compressed=False)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return parse_idx(stream, path, size, compressed=True)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({' '.join(str(e).split())})") from None


def parse_idx(stream: BinaryIO, path: Path, file_size: int, compressed: bool) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in IDX_DTYPES or magic[3] == 0:
        raise DataError(f"{path}: not an idx file (bad magic number {magic.hex() or 'empty'})")
    ndim = magic[3]
    if ndim > IDX_MAX_DIMS:
        raise DataError(f"{path}: idx header declares {ndim} dimensions (expected at most {IDX_MAX_DIMS})")
    dims = stream.read(4 * ndim)
    header = 4 + 4 * ndim
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated idx header (expected {header} bytes, got {4 + len(dims)})")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(IDX_DTYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no wrap-around
    declared = f"header declares shape {shape} ({expected} bytes of data)"
    # Even an empty array must have a representable size, as int64 labels or float64 too.
    if math.prod(max(d, 1) for d in shape) * 8 > np.iinfo(np.intp).max:
        raise DataError(f"{path}: {declared}, more than any array can hold")
    if not compressed and file_size - header != expected:
        raise DataError(f"{path}: {declared}, but the file holds {file_size - header} bytes")
    if compressed and header + expected > DEFLATE_MAX_RATIO * file_size:
        raise DataError(f"{path}: {declared}, more than a {file_size}-byte gzip file can inflate to")
    data = np.empty(expected, dtype=np.uint8)  # pages are only touched as data arrives
    got = read_upto(stream, data)
    if got < expected:
        raise DataError(f"{path}: {declared}, but the file holds {got} bytes")
    if stream.read(1):
        raise DataError(f"{path}: {declared}, but the file holds more")
    return data.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def value_range(array: np.ndarray) -> str:
    return f"{array.min()}..{array.max()}" if array.size else "no values"


def idx_pixels(array: np.ndarray, path: Path | str) -> np.ndarray:
    """idx images as uint8, by an explicit rule per element type (never a silent cast):

    - uint8 as stored; int8, int16, int32 must hold 0..255 and are kept exactly;
    - float32, float64 must be finite and in [0, 1] (the usual scaled images) and become
      round(255 x), so 0.5 -> 128 (ties to even) and 1.0 -> 255.
    Anything else is refused: a value outside the range has no faithful 8-bit equivalent.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise DataError(
                f"{path}: {array.dtype} pixels include NaN or infinity (expected values in [0, 1])"
            )
        if array.size and (array.min() < 0 or array.max() > 1):
            raise DataError(
                f"{path}: {array.dtype} pixels span {value_range(array)} (expected [0, 1], scaled to "
                "0..255; store 0..255 images as uint8)"
            )
        return np.rint(array * 255).astype(np.uint8)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"{path}: {array.dtype} pixels span {value_range(array)} (expected 0..255)")
    return array.astype(np.uint8)


def idx_labels(array: np.ndarray, path: Path | str) -> np.ndarray:
    """idx labels as int64: any integer element type; floats are refused (2.7 is not a class)."""
    if array.dtype.kind == "f":
        raise DataError(
            f"{path}: labels are {array.dtype} (expected an integer idx type: uint8, int8, int16, int32)"
        )
    return array.astype(np.int64)


def read_cifar_binary(
    paths: list[Path], label_bytes: int, label_index: int, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary batches -> (images (N, 3, 32, 32) uint8, labels (N,) int64).

    CIFAR-10 records have 1 label byte; CIFAR-100 records have 2 (coarse, fine): `label_index` picks one.
    Given `num_classes`, each file's labels are checked, so an error names the batch file that holds it.
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
        if num_classes is not None:
            check_labels(labels[-1], num_classes, path)
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


def max_image_pixels() -> int:
    """Pixels an image may declare before it is refused undecoded: $TRAINLAB_MAX_IMAGE_PIXELS, default
    4096 x 4096. Pillow's own bomb check (~179 Mpx) is far above what a small-image trainer needs."""
    value = os.environ.get("TRAINLAB_MAX_IMAGE_PIXELS", "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not (value.isascii() and value.isdigit() and int(value) > 0):
        raise ConfigError(f"TRAINLAB_MAX_IMAGE_PIXELS={value!r}: expected a positive whole number of pixels")
    return int(value)


def unreadable(path: Path, error: BaseException) -> DataError:
    if isinstance(error, UnidentifiedImageError):
        reason = "unknown format or corrupt header"
    elif isinstance(error, Image.DecompressionBombError):
        reason = f"more than {2 * Image.MAX_IMAGE_PIXELS} pixels, Pillow's decompression-bomb limit"
    else:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
    return DataError(f"{path}: not a readable image ({reason})")


@contextmanager
def image_header(path: Path, max_pixels: int | None = None) -> Iterator[Image.Image]:
    """The image lazily opened: header parsed, no pixel decoded, its size within `max_pixels`
    (default `max_image_pixels()`). Pillow errors inside the block, decoding included, become one
    DataError naming the file."""
    limit = max_pixels or max_image_pixels()
    with open_regular(path) as f:
        try:
            with Image.open(f) as image:
                width, height = image.size
                if width * height > limit:
                    raise DataError(
                        f"{path}: {width}x{height} image has {width * height} pixels, more than the limit "
                        f"of {limit} (raise TRAINLAB_MAX_IMAGE_PIXELS to decode it)"
                    )
                yield image
        except PILLOW_ERRORS as e:
            raise unreadable(path, e) from None


def load_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image file converted exactly as training data is: mode conversion, then resize to (H, W)."""
    with image_header(path) as image:
        image.load()
        pixels = to_pixels(image, channels)
    if pixels.shape[1:] != tuple(size):
        resized = [Image.fromarray(c).resize((size[1], size[0]), Image.BILINEAR) for c in pixels]
        pixels = np.stack([np.asarray(c) for c in resized])
    return pixels


def skipped(name: str) -> bool:
    """Hidden entries (.ipynb_checkpoints/, AppleDouble ._x.png, .DS_Store) and macOS zips' __MACOSX/."""
    return name.startswith(".") or name == "__MACOSX"


def scan_image_folder(
    root: Path, allow_empty_classes: bool = False
) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of a folder with one subfolder per class, classes sorted by name.

    Hidden entries are skipped (see `skipped`). A class folder without images and a folder with fewer
    than two classes are refused, unless `allow_empty_classes` (a test split may lack a class).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected one subfolder per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not skipped(p.name))
    if len(classes) < 2 and not allow_empty_classes:
        raise DataError(
            f"{root}: {len(classes)} class folder{'s' * (len(classes) != 1)} {classes} (expected at least "
            "two subfolders, one per class)"
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = root / name
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(skipped(part) for part in p.relative_to(folder).parts)
            and not p.is_dir()
        )
        if not found and not allow_empty_classes:
            raise DataError(f"{folder}: class folder holds no PNG/JPEG/BMP images (remove it or add images)")
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"{root}: no PNG/JPEG/BMP images found in class subfolders")
    return files, np.asarray(labels, dtype=np.int64), classes


def folder_geometry(files: list[Path], others: list[Path] = ()) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of an image folder, from the headers of all `files` (nothing decoded):
    1 channel if every image is grey, else 3; the most common size (ties: the first in sorted order).

    The headers of `others` (the test split) are checked too, so that any file that is not a readable
    image within the pixel limit is refused before training. Images of another size are resized, and
    reported in one warning.
    """
    limit = max_image_pixels()
    headers = {}
    for path in [*files, *others]:
        with image_header(path, limit) as image:
            headers[path] = (image.mode, (image.height, image.width))
    channels = 1 if all(headers[p][0] in GREY_MODES for p in files) else 3
    size = Counter(headers[p][1] for p in files).most_common(1)[0][0]
    outliers = [p for p, (_, hw) in headers.items() if hw != size]
    if outliers:
        h, w = headers[outliers[0]][1]
        warnings.warn(
            f"{len(outliers)} of {len(headers)} images are not {size[0]}x{size[1]}, the folder's common "
            f"size, and are resized to it (e.g. {outliers[0]}: {h}x{w})",
            stacklevel=2,
        )
    return channels, size
