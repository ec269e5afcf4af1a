"""Issue 12, hostile and careless data files: idx element types (#3), decompression bombs (#9), gzip bombs
(#10), idx sizes that overflow int64 (#11), FIFOs named like images (#13), loose class discovery (#14),
and the CIFAR and unreadable-image messages (#20). Each test failed before its fix.

Every hostile file is small: a bomb is a header that declares a huge size, or compressed zeros. Memory is
bounded by refusing before anything is allocated, shown by the allocation peak (tracemalloc) or by an
error that only a check made before decoding can give. A FIFO would hang forever, so those tests run under
`bounded`, which turns a hang into a failure (a hang guard, not a speed assertion: 20 s)."""

from __future__ import annotations

import gzip
import os
import signal
import struct
import tracemalloc
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainlab.cli import main
from trainlab.data import formats
from trainlab.data.datasets import load_dataset
from trainlab.errors import ConfigError, DataError, TrainlabError

IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}
HANG_GUARD_S = 20


class Hang(BaseException):
    """Not an Exception, so that no `except OSError` in the code under test can swallow it."""


@contextmanager
def bounded(megabytes: float = 16, seconds: float = HANG_GUARD_S):
    """Fail if the block allocates more than `megabytes` at its peak (Python and NumPy allocations, via
    tracemalloc), or does not finish within `seconds` (SIGALRM: a blocked open() is interrupted)."""

    def hang(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < megabytes * 2**20, f"peak allocation {peak / 2**20:.1f} MB (bound {megabytes} MB)"


def one_line(error: BaseException, path: Path | str) -> None:
    """`error` is trainlab's one-line error, and names `path`."""
    assert isinstance(error, TrainlabError) and "\n" not in str(error) and str(path) in str(error), error


def idx_bytes(array: np.ndarray, dims: tuple[int, ...] | None = None) -> bytes:
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, IDX_CODES[array.dtype.name], len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(root: Path, train_images: np.ndarray, train_labels: np.ndarray | None = None) -> Path:
    """An 'mnist' under root/mnist whose training images (and labels) have any idx element type."""
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(train_images)
    labels = (np.arange(n) % 10).astype(np.uint8) if train_labels is None else train_labels
    files = {
        "train-images-idx3-ubyte.gz": train_images,
        "train-labels-idx1-ubyte.gz": labels,
        "t10k-images-idx3-ubyte.gz": np.zeros((4, *train_images.shape[1:]), np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(4, dtype=np.uint8),
    }
    for name, array in files.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
    return folder


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height 8-bit grey pixels but holds 100 compressed zero bytes: cheap to
    write, and any attempt to decode it fails as truncated, so only a header check can refuse it cleanly."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(100))
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    return path


def class_folder(root: Path, classes=("a", "b"), per_class=2, size=(8, 8)) -> Path:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (size[1], size[0]), 40 + 100 * k).save(root / name / f"{i}.png")
    return root


# 3: idx element types


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_idx_images_in_unit_range_are_scaled_to_bytes(tmp_path, monkeypatch, dtype):
    images = np.zeros((10, 2, 3), dtype)
    images[:, 0] = [0.0, 0.5, 1.0]
    images[:, 1] = [0.25, 0.999, 1 / 255]
    write_mnist(tmp_path, images)
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    pixels = load_dataset("mnist").train_images[3, 0]
    assert pixels.tolist() == [[0, 128, 255], [64, 255, 1]]  # round(255 x); a cast gave 0/1


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32"])
def test_integer_idx_types_are_kept_exactly(tmp_path, monkeypatch, dtype):
    top = 127 if dtype == "int8" else 255
    images = np.arange(10 * 4 * 4).reshape(10, 4, 4) % (top + 1)
    write_mnist(tmp_path, images.astype(dtype), (np.arange(10) % 10).astype(dtype))
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    data = load_dataset("mnist")
    assert data.train_images[:, 0].tolist() == images.tolist()
    assert data.train_labels.tolist() == list(range(10))


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.full((10, 4, 4), 1.5, np.float32), None, r"float32 pixels span 1.5..1.5 \(expected \[0, 1\]"),
        (np.full((10, 4, 4), np.nan, np.float64), None, "float64 pixels include NaN"),
        (np.full((10, 4, 4), 1000, np.int16), None, r"int16 pixels span 1000..1000 \(expected 0..255\)"),
        (np.full((10, 4, 4), -3, np.int8), None, r"int8 pixels span -3..-3"),
        (np.zeros((10, 4, 4), np.uint8), np.full(10, 2.7, np.float32), "labels are float32"),
    ],
    ids=["float-above-1", "nan", "int16-above-255", "negative-int8", "float-labels"],
)
def test_idx_values_without_an_8bit_meaning_are_refused(tmp_path, monkeypatch, images, labels, message):
    folder = write_mnist(tmp_path, images, labels)
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    with pytest.raises(DataError, match=message) as error:
        load_dataset("mnist")
    one_line(error.value, folder / f"train-{'labels-idx1' if labels is not None else 'images-idx3'}-ubyte.gz")


# 9: decompression bombs


def test_an_image_over_pillows_bomb_limit_is_one_line(tmp_path, capsys):
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)  # 400 Mpx: Pillow raises DecompressionBombError
    with pytest.raises(DataError, match="not a readable image") as error:
        formats.load_image(bomb, 1, (28, 28))
    one_line(error.value, bomb)
    root = class_folder(tmp_path / "folder")
    png_header(root / "a" / "bomb.png", 20000, 20000)
    assert main(["data", "info", f"folder:{root}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"trainlab: error: {root / 'a' / 'bomb.png'}: not a readable image (more than "
        f"{2 * Image.MAX_IMAGE_PIXELS} pixels, Pillow's decompression-bomb limit)"
    ]


def test_pixels_are_bounded_from_the_header_before_decoding(tmp_path):
    # 36 Mpx is under Pillow's limit; decoding it cost gigabytes to predict one 28x28 input. The file holds
    # no real pixel data, so the limit's message (not "truncated") shows the refusal came before decoding.
    big = png_header(tmp_path / "big.png", 6000, 6000)
    with (
        bounded(),
        pytest.raises(DataError, match="6000x6000 image has 36000000 pixels, more than the limit"),
    ):
        formats.load_image(big, 1, (28, 28))


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("L", (10, 10), 7).save(tmp_path / "ok.png")
    Image.new("L", (11, 10), 7).save(tmp_path / "over.png")
    monkeypatch.setenv("TRAINLAB_MAX_IMAGE_PIXELS", "100")
    assert formats.load_image(tmp_path / "ok.png", 1, (10, 10)).max() == 7
    with pytest.raises(DataError, match="110 pixels, more than the limit of 100"):
        formats.load_image(tmp_path / "over.png", 1, (10, 10))
    monkeypatch.setenv("TRAINLAB_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="TRAINLAB_MAX_IMAGE_PIXELS='lots': expected a positive whole"):
        formats.load_image(tmp_path / "ok.png", 1, (10, 10))


def test_a_folder_takes_its_common_size_and_reports_outliers(tmp_path):
    root = class_folder(tmp_path / "folder", per_class=3)
    Image.new("L", (300, 300)).save(root / "a" / "-big.png")  # sorts first: it used to set the size
    with pytest.warns(UserWarning) as caught:
        data = load_dataset(f"folder:{root}")
    assert data.image_shape == (1, 8, 8) and len(data.train_images) == 7
    assert [str(w.message) for w in caught] == [
        f"1 of 7 images are not 8x8, the folder's common size, and are resized to it "
        f"(e.g. {root / 'a' / '-big.png'}: 300x300)"
    ]


def test_every_header_of_both_splits_is_checked_at_load(tmp_path):
    root = tmp_path / "folder"
    class_folder(root / "train")
    class_folder(root / "test")
    png_header(root / "test" / "b" / "huge.png", 5000, 5000)
    with pytest.raises(DataError, match="5000x5000 image has 25000000 pixels") as error:
        load_dataset(f"folder:{root}", memory_budget_mb=1e-6)  # streamed: nothing else decodes it early
    one_line(error.value, root / "test" / "b" / "huge.png")


# 10: gzip bomb


def gzip_stream(header: bytes, zeros_mb: int) -> bytes:
    """gzip of `header` followed by zeros_mb MiB of zeros, compressed piecewise (about 1 KB per MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    zeros = bytes(2**20)
    parts = [compressor.compress(header)] + [compressor.compress(zeros) for _ in range(zeros_mb)]
    return b"".join(parts) + compressor.flush()


def test_a_gzip_bomb_stops_at_the_declared_size(tmp_path):
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip_stream(bytes([0, 0, 8, 1]) + struct.pack(">I", 60), zeros_mb=64))
    assert bomb.stat().st_size < 100_000
    with bounded(megabytes=8), pytest.raises(DataError, match=r"declares shape \(60,\).*holds more") as error:
        formats.read_idx(bomb)  # inflating it all took 64 MB (a real one: 2 GB, 4.2 GB peak)
    one_line(error.value, bomb)


def test_a_gzip_header_declaring_more_than_deflate_can_hold_is_refused_unallocated(tmp_path):
    liar = tmp_path / "liar.gz"
    liar.write_bytes(gzip.compress(bytes([0, 0, 8, 2]) + struct.pack(">2I", 2**31 - 1, 1024)))  # 2 TB
    with bounded(megabytes=8), pytest.raises(DataError, match="more than a .*-byte gzip file can inflate to"):
        formats.read_idx(liar)


def test_a_streamed_gzip_idx_reads_the_same_values(tmp_path):
    array = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(formats.read_idx(path), array)
    assert formats.read_idx(path).dtype == np.float32


# 11: idx sizes


@pytest.mark.parametrize(
    "dims",
    [(2**31, 2**31, 4), (0, 2**31, 2**31, 4), (0, 2**31, 2**31)],
    ids=["wraps-to-0", "zero-times-huge", "empty-but-too-big-as-int64"],
)
def test_idx_dims_whose_product_overflows_int64_are_refused(tmp_path, dims):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))  # header only
    with bounded(megabytes=1), pytest.raises(DataError, match="more than any array can hold") as error:
        formats.read_idx(path)  # the int64 product passed validation and reshape threw
    one_line(error.value, path)


# 13: FIFOs


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with bounded(), pytest.raises(DataError, match=r"x.png: not a regular file \(found a FIFO"):
        formats.load_image(fifo, 1, (8, 8))  # predict's path
    root = class_folder(tmp_path / "folder")
    os.mkfifo(root / "b" / "y.png")
    with bounded(), pytest.raises(DataError, match=r"y.png: not a regular file \(found a FIFO"):
        load_dataset(f"folder:{root}")  # train's path


def test_a_fifo_or_directory_is_not_read_as_data(tmp_path):
    fifo = tmp_path / "labels.gz"
    os.mkfifo(fifo)
    with bounded(), pytest.raises(DataError, match="not a regular file"):
        formats.read_idx(fifo)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match=r"dir.png: not a regular file \(found a directory"):
        formats.load_image(tmp_path / "dir.png", 1, (8, 8))


# 14: class discovery


def test_hidden_entries_are_not_classes_or_images(tmp_path):
    root = class_folder(tmp_path / "folder")
    class_folder(root / ".ipynb_checkpoints", classes=("a-checkpoint",))
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    (root / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # AppleDouble resource fork
    class_folder(root / "b" / ".hidden", classes=("deep",))
    data = load_dataset(f"folder:{root}")
    assert data.classes == ["a", "b"] and len(data.train_images) == 4
    assert [f.relative_to(root).as_posix() for f in data.files["train"]] == [
        "a/0.png",
        "a/1.png",
        "b/0.png",
        "b/1.png",
    ]


def test_an_empty_class_folder_is_refused(tmp_path):
    root = class_folder(tmp_path / "folder")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder holds no PNG/JPEG/BMP images") as error:
        load_dataset(f"folder:{root}")
    one_line(error.value, root / "empty")


@pytest.mark.parametrize("classes", [("only",), ()])
def test_fewer_than_two_classes_are_refused(tmp_path, classes):
    root = class_folder(tmp_path / "folder", classes=classes)
    root.mkdir(exist_ok=True)
    Image.new("L", (8, 8)).save(root / "loose.png")
    with pytest.raises(DataError, match=rf"{len(classes)} class folders? .*expected at least two"):
        load_dataset(f"folder:{root}")


def test_a_test_split_may_lack_a_class(tmp_path):
    root = tmp_path / "folder"
    class_folder(root / "train")
    class_folder(root / "test", classes=("a",))
    (root / "test" / "b").mkdir()
    data = load_dataset(f"folder:{root}")
    assert data.classes == ["a", "b"] and data.test_labels.tolist() == [0, 0]


@pytest.mark.parametrize("name", ["folder:", "folder:  "])
def test_folder_without_a_path_does_not_scan_the_working_directory(tmp_path, monkeypatch, name):
    monkeypatch.chdir(class_folder(tmp_path))  # a cwd that would load as a dataset
    with pytest.raises(DataError, match="expected folder:PATH"):
        load_dataset(name)


# 20: messages


def test_a_cifar_label_error_names_the_batch_file_that_holds_it(tmp_path, monkeypatch, capsys):
    root = tmp_path / "cifar10"
    root.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rows = np.zeros((2, 3073), np.uint8)
        rows[1, 0] = 10 if name == "data_batch_3.bin" else 1
        (root / name).write_bytes(rows.tobytes())
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    assert main(["data", "info", "cifar10"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"trainlab: error: {root / 'data_batch_3.bin'}: label 10 is out of range (expected 0..9)"
    ]


def test_an_unreadable_folder_image_is_one_trainlab_line_and_exit_2(tmp_path, capsys):
    root = class_folder(tmp_path / "folder")
    (root / "a" / "bad.png").write_bytes(b"this is not a png")
    assert main(["data", "info", f"folder:{root}"]) == 2  # was 1, with Pillow's text alone
    assert capsys.readouterr().err.strip().splitlines() == [
        f"trainlab: error: {root / 'a' / 'bad.png'}: not a readable image (unknown format or corrupt header)"
    ]
