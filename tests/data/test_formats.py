"""idx, CIFAR-binary and image-folder readers: correct values, and one clear error per corruption."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_idx
from trainlab.data import formats
from trainlab.data.datasets import load_dataset, split_train_val
from trainlab.errors import DataError


def test_idx_round_trip_gz_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = write_idx(tmp_path / f"a{'.gz' if compress else ''}", array, compress)
        np.testing.assert_array_equal(formats.read_idx(path), array)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "bad magic"),
        (lambda b: b[:-5], "holds"),
        (lambda b: b + b"\x00", "holds"),
        (lambda b: b[:6], "truncated idx header"),
        (lambda b: b"", "bad magic"),
    ],
    ids=["magic", "short-data", "extra-data", "short-header", "empty"],
)
def test_idx_corruptions_name_the_file(tmp_path, mutate, message):
    good = write_idx(tmp_path / "good", np.zeros((5, 4, 4), np.uint8), compress=False).read_bytes()
    bad = tmp_path / "bad-idx"
    bad.write_bytes(mutate(good))
    with pytest.raises(DataError, match=message) as info:
        formats.read_idx(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_truncated_gzip_is_reported(tmp_path):
    data = gzip.compress(
        write_idx(tmp_path / "x", np.zeros((50, 8, 8), np.uint8), compress=False).read_bytes()
    )
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        formats.read_idx(path)


def test_label_count_mismatch_and_range(tiny_mnist):
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte.gz", np.zeros(99, np.uint8))
    with pytest.raises(DataError, match="99 labels for 100 images"):
        load_dataset("mnist")
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte.gz", np.full(100, 10, np.uint8))
    with pytest.raises(DataError, match=r"label 10 is out of range \(expected 0..9\)"):
        load_dataset("mnist")


def test_missing_dataset_lists_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match="trainlab data fetch cifar10"):
        load_dataset("cifar10")


def test_cifar_binary(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar10"
    root.mkdir()
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (4, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        (root / name).write_bytes(np.concatenate([labels, pixels], 1).tobytes())
        records[name] = (labels, pixels)
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path))
    data = load_dataset("cifar10")
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    labels, pixels = records["test_batch.bin"]
    np.testing.assert_array_equal(data.test_labels.numpy(), labels[:, 0])
    np.testing.assert_array_equal(data.test_images[1, 2].numpy().ravel(), pixels[1, 2048:])
    (root / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR records"):
        load_dataset("cifar10")


def test_cifar100_uses_fine_label(tmp_path):
    row = np.concatenate([[3, 77], np.zeros(3072)]).astype(np.uint8)
    path = tmp_path / "train.bin"
    path.write_bytes(row.tobytes())
    _, labels = formats.read_cifar_binary([path], label_bytes=2, label_index=1)
    assert labels.tolist() == [77]


def test_image_folder_mode_conversions(tmp_path, monkeypatch):
    root = tmp_path / "shapes"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("RGB", (6, 5), (255, 0, 0)).save(root / "a" / "rgb.png")
    Image.new("L", (6, 5), 128).save(root / "a" / "grey.bmp")
    Image.new("RGBA", (6, 5), (0, 255, 0, 0)).save(root / "b" / "transparent.png")
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(root / "b" / "wide.png")
    palette = Image.new("P", (6, 5), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.save(root / "b" / "palette.png")
    Image.new("RGB", (12, 10), (0, 0, 0)).save(root / "b" / "big.jpg")
    data = load_dataset(f"folder:{root}")
    assert data.classes == ["a", "b"] and data.image_shape == (3, 5, 6)
    by_name = {p.name: data.train_images[i] for i, p in enumerate(data.files["train"])}
    assert by_name["rgb.png"][:, 0, 0].tolist() == [255, 0, 0]
    assert by_name["grey.bmp"][:, 0, 0].tolist() == [128, 128, 128]
    assert by_name["transparent.png"][:, 0, 0].tolist() == [0, 0, 0]  # alpha 0 over black
    assert by_name["wide.png"][:, 0, 0].tolist() == [255, 255, 255]  # 16-bit 65535 -> 255
    assert by_name["palette.png"][:, 0, 0].tolist() == [0, 0, 255]
    assert data.train_labels.tolist() == [0, 0, 1, 1, 1, 1]


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "c").mkdir()
    bad = tmp_path / "c" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        formats.load_image(bad, 1, (4, 4))


def test_fashion_mnist_is_the_official_data(fashion_mnist):
    assert fashion_mnist.train_images.shape == (60000, 1, 28, 28)
    assert fashion_mnist.test_images.shape == (10000, 1, 28, 28)
    assert fashion_mnist.train_labels.bincount().tolist() == [6000] * 10
    assert fashion_mnist.train_labels[:5].tolist() == [9, 0, 0, 3, 0]


def test_validation_split_is_seeded_and_disjoint():
    train_a, val_a = split_train_val(1000, 100, seed=3)
    train_b, val_b = split_train_val(1000, 100, seed=3)
    _, val_c = split_train_val(1000, 100, seed=4)
    assert train_a.equal(train_b) and val_a.equal(val_b) and not val_a.equal(val_c)
    assert len(set(train_a.tolist()) | set(val_a.tolist())) == 1000 and len(val_a) == 100
    with pytest.raises(DataError, match="out of range"):
        split_train_val(10, 10, 0)
