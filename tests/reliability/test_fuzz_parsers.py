"""Issue 12, fuzzing of the data-file parsers (hypothesis): idx files (raw and gzip, structured headers
with any type, dims and payload, bit flips, truncations, gzip bombs), CIFAR binary batches, and image
folders (valid, truncated, bit-flipped and random images of every mode, hidden entries, FIFOs,
directories named like images, empty classes). Each input either loads into arrays that agree with what
the file declares, or raises trainlab's one-line error (a TrainlabError naming the file).

Memory is bounded per example by the allocation peak (tracemalloc: Python and NumPy), and for the image
folder, whose decoding Pillow does in C, by the pixel limit (TRAINLAB_MAX_IMAGE_PIXELS=4096) and the
process's peak resident size, which may grow by less than 512 MB over all examples. Time is bounded by a
hang guard (`bounded`), not a speed assertion. A coverage-guided target for the idx parser, run by hand,
is tests/fuzz/atheris_idx.py."""

from __future__ import annotations

import gzip
import io
import math
import os
import resource
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.reliability.test_data_files import bounded, one_line, png_header
from trainlab.data import formats
from trainlab.data.datasets import load_dataset
from trainlab.errors import DataError, TrainlabError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
HUGE = st.sampled_from([255, 2**16, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-parsers")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    """`data` with the byte at each position (mod length) XORed with a nonzero value, then cut short."""
    out = bytearray(data)
    for position, value in flips:
        if out:
            out[position % len(out)] ^= value
    return bytes(out[:cut] if cut is not None else out)


@st.composite
def idx_files(draw) -> tuple[bytes, bool, tuple[int, ...] | None]:
    """(file bytes, gzip?, the dims the header declares if the file is well formed and unmutated).

    Mostly plausible headers (valid types, 1-4 small dims, the declared payload or one byte off), so
    that the checks past the magic number are reached; then rarer huge dims, bad types and dimension
    counts, random bytes, bit flips, truncations and gzip bombs."""
    gz = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=600)), gz, None
    code = draw(st.sampled_from(IDX_CODES * 3 + [0x00, 0x0A, 0xFF]))
    ndim = draw(st.sampled_from([1, 2, 3, 4] * 3 + [0, 33, 255]))
    dims = tuple(
        draw(
            st.lists(
                st.sampled_from(range(13)) | st.integers(0, 12) | st.integers(0, 12) | HUGE,
                min_size=ndim,
                max_size=ndim,
            )
        )
    )
    itemsize = {0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    declared = math.prod(dims) * itemsize
    length = declared + draw(st.sampled_from([0, 0, 0, -1, 1]))
    length = length if 0 <= length <= 4096 else draw(st.integers(0, 4096))
    header = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    data = header + np.random.default_rng(draw(SEEDS)).bytes(length)
    if gz and draw(st.integers(0, 5)) == 0:  # a gzip bomb: megabytes of zeros compress to a few KB
        data = gzip.compress(data + bytes(4 * 2**20), compresslevel=1)
    elif gz:
        data = gzip.compress(data)
    flips, cut = [], None
    if draw(st.integers(0, 3)) == 0:
        flips = draw(st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), max_size=3))
        cut = draw(st.none() | st.integers(0, len(data)))
    intact = not flips and cut is None and code in IDX_CODES and 0 < ndim <= 32 and length == declared
    return mutate(data, flips, cut), gz, dims if intact else None


@FUZZ
@given(case=idx_files())
def test_idx_parser_loads_what_the_header_declares_or_says_why_not(workdir, case):
    data, gz, dims = case
    path = workdir / ("fuzz-idx.gz" if gz else "fuzz-idx")
    path.write_bytes(data)
    with bounded(megabytes=32):
        try:
            array = formats.read_idx(path)
        except DataError as error:
            one_line(error, path)
            event(f"refused: {str(error).split(': ', 1)[1][:24]}")
            return
        event("loaded")
        if dims is not None:
            assert array.shape == dims
        for convert in (formats.idx_pixels, formats.idx_labels):
            try:
                converted = convert(array, path)
            except DataError as error:
                one_line(error, path)
                continue
            assert converted.shape == array.shape and converted.dtype in (np.uint8, np.int64)
            if convert is formats.idx_labels:
                assert np.array_equal(converted, array)


CIFAR_FILES = st.tuples(
    st.sampled_from([1, 1, 2, 3, 0]),  # records
    st.sampled_from([0, 0, 0, 0, -1, 1, -3073, 7]),  # bytes added or cut
    st.sampled_from([False, False, False, False, True]),  # one label out of range
    st.booleans(),  # gzip
    SEEDS,
)


@FUZZ
@given(
    files=st.lists(CIFAR_FILES, min_size=1, max_size=3),
    label_bytes=st.sampled_from([1, 2]),
    num_classes=st.sampled_from([1, 10, 100, 256]),
)
def test_cifar_reader_loads_whole_records_or_names_the_bad_file(workdir, files, label_bytes, num_classes):
    record = label_bytes + 3072
    paths, expected, first_bad = [], [], None
    for i, (records, extra, bad_label, gz, seed) in enumerate(files):
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, 256, (records, record), dtype=np.uint8)
        rows[:, label_bytes - 1] = rng.integers(0, num_classes, records)
        if bad_label and records and num_classes < 256:
            rows[-1, label_bytes - 1] = num_classes
        raw = rows.tobytes()[: max(0, records * record + extra)] + bytes(max(0, extra))
        path = workdir / f"batch_{i}.bin{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths.append(path)
        kept = np.frombuffer(raw, np.uint8).reshape(-1, record) if raw and len(raw) % record == 0 else None
        if first_bad is None and (kept is None or (kept[:, label_bytes - 1] >= num_classes).any()):
            first_bad = path
        expected.append(kept)
    with bounded(megabytes=32):
        try:
            images, labels = formats.read_cifar_binary(paths, label_bytes, label_bytes - 1, num_classes)
        except DataError as error:
            assert first_bad is not None and str(error).startswith(f"{first_bad}: ")
            one_line(error, first_bad)
            event("refused")
            return
    event("loaded")
    assert first_bad is None
    rows = np.concatenate(expected)
    assert np.array_equal(labels, rows[:, label_bytes - 1]) and labels.dtype == np.int64
    assert np.array_equal(images.reshape(len(rows), -1), rows[:, label_bytes:])


MODES = ["L", "RGB", "RGBA", "P", "I;16", "I", "1", "LA"]
ENTRY_NAMES = ["0.png", "1.jpg", "2.bmp", "3.PNG", "sub/6.jpeg"] * 2 + [
    "._4.png",
    ".ipynb_checkpoints/5.png",
    "7.txt",
]
CONTENTS = ["image"] * 24 + ["mutated", "random", "empty", "liar", "fifo", "directory"]
CLASS_NAMES = ["a", "b", "c", "with space", "ünï", ".hidden", "__MACOSX"]


def image_bytes(mode: str, width: int, height: int, suffix: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode if mode not in ("I;16", "I") else "L")
    if mode in ("I;16", "I"):
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257).convert(mode)  # I;16
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(suffix.lower(), "PNG")
    out = io.BytesIO()
    try:
        image.save(out, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot store
        out = io.BytesIO()
        image.convert("RGB").save(out, format=fmt)
    return out.getvalue()


@st.composite
def image_trees(draw) -> dict[str, tuple[str, bytes]]:
    """{relative path: (kind, bytes)} of an image folder of 0-3 classes of 1-3 entries, mostly valid
    images, so that whole folders load too; the rest is hostile or ignorable."""
    tree = {}
    classes = draw(st.permutations(CLASS_NAMES))[: draw(st.sampled_from([0, 1, 2, 3, 3, 3, 3]))]
    for name in classes:
        for entry in draw(st.lists(st.sampled_from(ENTRY_NAMES), min_size=1, max_size=3, unique=True)):
            kind = draw(st.sampled_from(CONTENTS))
            suffix = Path(entry).suffix
            content = b""
            if kind in ("image", "mutated"):
                mode, width, height = (
                    draw(st.sampled_from(MODES)),
                    draw(st.integers(1, 12)),
                    draw(st.integers(1, 12)),
                )
                content = image_bytes(mode, width, height, suffix, draw(SEEDS))
            if kind == "mutated":
                flips = draw(st.lists(st.tuples(st.integers(0, 2**12), st.integers(1, 255)), max_size=3))
                content = mutate(content, flips, draw(st.none() | st.integers(0, len(content))))
            if kind == "random":
                content = draw(st.binary(max_size=300))
            tree[f"{name}/{entry}"] = (kind, content)
    return tree


def build(root: Path, tree: dict[str, tuple[str, bytes]]) -> None:
    root.mkdir()
    for relative, (kind, content) in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "directory":
            path.mkdir()
        elif kind == "liar":
            png_header(path, 5000, 5000)
        else:
            path.write_bytes(content)


@settings(FUZZ, max_examples=100)
@given(tree=image_trees(), streamed=st.booleans())
def test_image_folder_loads_consistently_or_says_why_not(workdir, tree, streamed):
    start = rss_mb()
    root = Path(tempfile.mkdtemp(dir=workdir)) / "data"
    build(root, tree)
    previous = os.environ.get("TRAINLAB_MAX_IMAGE_PIXELS")
    os.environ["TRAINLAB_MAX_IMAGE_PIXELS"] = "4096"
    try:
        with bounded(megabytes=32), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the outlier-size report
            try:
                data = load_dataset(f"folder:{root}", memory_budget_mb=1e-6 if streamed else None)
                images = (
                    data.train_images[torch.arange(len(data.train_labels))] if streamed else data.train_images
                )
            except TrainlabError as error:
                one_line(error, root)
                event(f"refused: {str(error).rsplit(': ', 1)[-1][:24]}")
                return
        event("loaded")
        visible = sorted({p.split("/")[0] for p in tree if not formats.skipped(p.split("/")[0])})
        assert data.classes == visible and len(data.classes) >= 2
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] in (1, 3)
        assert len(images) == len(data.train_labels) == len(data.files["train"])
        assert set(data.train_labels.tolist()) == set(range(len(data.classes)))  # no class is empty
        assert all(
            not part.startswith(".") for f in data.files["train"] for part in f.relative_to(root).parts
        )
    finally:
        shutil.rmtree(root.parent)
        if previous is None:
            del os.environ["TRAINLAB_MAX_IMAGE_PIXELS"]
        else:
            os.environ["TRAINLAB_MAX_IMAGE_PIXELS"] = previous
    assert rss_mb() - start < 512
