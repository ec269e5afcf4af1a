"""fmnist-scenes: determinism, ground truth that follows from the item pixels, split provenance, option
checks, the on-disk cache, and the SHA-256 values that docs/scenes.md publishes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainlab.data.datasets import ImageDataset
from trainlab.data.scenes import (
    DEFAULTS,
    SPLITS,
    load_scenes,
    make_scenes,
    resize,
    resize_weights,
    scenes_sha256,
)
from trainlab.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenes.md"


@pytest.fixture(scope="module")
def pool(fashion_mnist):
    """The training split's source images (the first 55,000 training images)."""
    return fashion_mnist.train_images[:55_000], fashion_mnist.train_labels[:55_000]


@pytest.fixture(scope="module")
def scenes(pool):
    return make_scenes(*pool, n=64, seed=0)


def tensors(s):
    return s.images, s.labels, s.boxes, s.instances


def test_a_seed_gives_identical_tensors_and_another_seed_other_ones(pool, scenes):
    again = make_scenes(*pool, n=64, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(tensors(scenes), tensors(again)))
    other = make_scenes(*pool, n=64, seed=1)
    assert not torch.equal(scenes.images, other.images)
    assert not torch.equal(scenes.labels, other.labels)


def reference_box(mask: torch.Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("options", [{}, {"clutter": 8, "noise": 0.1, "size": 80, "max_iou": 0.5}])
def test_ground_truth_follows_from_the_item_pixels(pool, options):
    s = make_scenes(*pool, n=64, seed=3, **options)
    size = options.get("size", 64)
    n, k = s.labels.shape
    assert s.images.shape == (n, 1, size, size) and s.images.dtype == torch.uint8
    assert s.boxes.shape == (n, k, 4) and s.instances.shape == (n, size, size) and k == 6
    masks, semantic = s.masks(), s.semantic()
    present = s.labels >= 0
    for i in range(n):
        count = int(present[i].sum())
        assert 1 <= count and present[i, :count].all() and not present[i, count:].any()  # -1 only at the end
        assert int(s.instances[i].max()) == count
        expected = torch.zeros(size, size, dtype=torch.long)
        for j in range(k):
            if j < count:  # a box is the tight box of the item's visible mask
                assert s.boxes[i, j].tolist() == reference_box(masks[i, j])
                expected[masks[i, j]] = s.labels[i, j] + 1
            else:
                assert not masks[i, j].any() and s.boxes[i, j].eq(0).all()
        assert torch.equal(semantic[i], expected)  # label + 1 on each item's pixels, 0 elsewhere
    if "noise" not in options:  # a visible item pixel is one of the item's pixels above the threshold
        assert (s.images[:, 0][s.instances > 0] > DEFAULTS["threshold"]).all()


def test_item_counts_cover_one_to_six_and_the_localize_variant_has_one(scenes, tmp_path):
    counts = (scenes.labels >= 0).sum(1)
    assert set(counts.tolist()) == {1, 2, 3, 4, 5, 6}
    one = load_scenes("fmnist-scenes:localize", "test", n=64, cache_dir=tmp_path)
    assert one.labels.shape == (64, 1) and (one.labels >= 0).all()
    assert one.masks().flatten(1).any(1).all()


def fake_source() -> ImageDataset:
    """Every image a flat 28x28 square of its own grey level: train images 0..109 (train pool) are 40..149,
    110..119 (val pool) 150..159, test images 200..239; the label is the image index mod 10."""
    square = lambda values: values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()  # noqa: E731
    train, test = torch.arange(40, 160), torch.arange(200, 240)
    return ImageDataset(
        "fake", square(train), torch.arange(120) % 10, square(test), torch.arange(40) % 10, list("abcdefghij")
    )


@pytest.mark.parametrize(
    "split, levels", [("train", range(40, 150)), ("val", range(150, 160)), ("test", range(200, 240))]
)
def test_each_split_takes_only_its_own_source_images(split, levels, tmp_path):
    s = load_scenes("fmnist-scenes", split, n=64, source=fake_source(), cache_dir=tmp_path)
    seen = set()
    for i in range(len(s)):
        for j in range(int((s.labels[i] >= 0).sum())):
            values = s.images[i, 0][s.instances[i] == j + 1].unique().tolist()
            assert len(values) == 1 and values[0] in levels  # a flat square stays flat when scaled
            assert s.labels[i, j] == (values[0] - levels[0]) % 10
            seen.add(values[0])
    assert len(seen) > 5


def test_scaling_is_interpolates_antialiased_bilinear_within_one_grey_level(pool):
    items = pool[0][:200, 0]
    for side in (14, 19, 28, 36):
        weights = torch.from_numpy(resize_weights(side, 28)).float().expand(len(items), -1, -1)
        ours = resize(items, weights).float()
        reference = F.interpolate(items[:, None].float(), size=(side, side), mode="bilinear", antialias=True)
        assert (ours - reference[:, 0]).abs().max() <= 1 + 1e-3


def test_items_are_drawn_in_slot_order_and_opaque_above_the_threshold():
    """Flat squares: an item's own mask is its whole square, so inside an item's box every pixel is its
    own or a later item's (later slots lie on top), and the topmost item is a whole square."""
    source = fake_source()
    s = make_scenes(source.train_images, source.train_labels, n=64, seed=5, max_iou=0.5, scale=(0.6, 1.0))
    overlapped = 0
    for i in range(len(s)):
        count = int((s.labels[i] >= 0).sum())
        for j in range(count):
            x1, y1, x2, y2 = s.boxes[i, j].int().tolist()
            inside = s.instances[i, y1:y2, x1:x2]
            assert (inside >= j + 1).all()
            overlapped += int((inside > j + 1).any())
        x1, y1, x2, y2 = s.boxes[i, count - 1].int().tolist()
        assert x2 - x1 == y2 - y1 and (s.instances[i, y1:y2, x1:x2] == count).all()
    assert overlapped > 5  # the property was exercised


@pytest.mark.parametrize(
    "option, value",
    [
        ("size", 8), ("size", 64.0), ("items", (0, 3)), ("items", (4, 2)), ("items", 3),
        ("scale", (0.1, 1.0)), ("scale", (1.0, 3.0)), ("scale", (0.8, 0.5)), ("max_iou", 1.5),
        ("max_iou", -0.1), ("noise", -0.1), ("noise", 2.0), ("clutter", -1), ("clutter", 1.5),
        ("threshold", 255), ("n", 0),
    ],
)  # fmt: skip
def test_an_option_out_of_range_is_one_error_naming_it(pool, option, value):
    with pytest.raises(ConfigError, match=rf"option {option}="):
        make_scenes(*pool, **{"n": 4, "seed": 0, option: value})


def test_bad_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown scene dataset"):
        load_scenes("fmnist-scene", "train", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'valid'"):
        load_scenes("fmnist-scenes", "valid", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['itmes'\]"):
        load_scenes("fmnist-scenes", "train", cache_dir=tmp_path, itmes=(1, 2))
    with pytest.raises(ConfigError, match="exactly one item"):
        load_scenes("fmnist-scenes:localize", "train", cache_dir=tmp_path, items=(1, 3))


def test_the_cache_returns_the_same_scenes_and_a_damaged_file_is_regenerated(tmp_path):
    fresh = load_scenes("fmnist-scenes", "val", n=32, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    cached = load_scenes("fmnist-scenes", "val", n=32, cache_dir=tmp_path)
    assert scenes_sha256(cached) == scenes_sha256(fresh)
    load_scenes("fmnist-scenes", "val", n=32, clutter=2, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # other options, another file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the tensors
    path.write_bytes(bytes(data))
    assert scenes_sha256(load_scenes("fmnist-scenes", "val", n=32, cache_dir=tmp_path)) == scenes_sha256(
        fresh
    )
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert scenes_sha256(load_scenes("fmnist-scenes", "val", n=32, cache_dir=tmp_path)) == scenes_sha256(
        fresh
    )
    assert len(path.read_bytes()) == len(data)  # rewritten whole


def published_sha256() -> dict[tuple[str, str], str]:
    rows = re.findall(
        r"^\| `(fmnist-scenes(?::localize)?)` \| (\w+) \| [\d,]+ \| `([0-9a-f]{64})` \|",
        DOCS.read_text(),
        re.M,
    )
    return {(variant, split): digest for variant, split, digest in rows}


def test_the_published_sha256_of_every_default_split_is_what_the_generator_gives(tmp_path_factory):
    published = published_sha256()
    assert set(published) == {(v, s) for v in ("fmnist-scenes", "fmnist-scenes:localize") for s in SPLITS}
    cache = tmp_path_factory.mktemp("scenes")
    for (variant, split), digest in sorted(published.items()):
        scenes = load_scenes(variant, split, cache_dir=cache)
        assert len(scenes) == SPLITS[split]
        assert scenes_sha256(scenes) == digest, f"{variant} {split}"


def test_data_preview_draws_the_scenes(tmp_path, monkeypatch, capsys):
    from trainlab.cli import main

    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "data"))  # the cache goes there, not to ~/.cache
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "fmnist-scenes", "--split", "val", "--n", "16", "--out", str(out)]) == 0
    assert "16 scenes" in capsys.readouterr().out
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (4 * (192 + 4) + 4, 4 * (192 + 4) + 4, 3)  # 4 x 4 tiles of 64 px, 3x enlarged
    assert (np.abs(picture[..., 0].astype(int) - picture[..., 1]) > 30).any()  # colour: boxes and masks
    assert main(["data", "preview", "fashion-mnist", "--out", str(out)]) == 2
    assert "unknown scene dataset 'fashion-mnist'" in capsys.readouterr().err


@pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)  # inside pycocotools' decode
def test_data_export_writes_coco_that_pycocotools_reads_back_to_our_masks(tmp_path, monkeypatch, capsys):
    coco_module = pytest.importorskip("pycocotools.coco", reason="pycocotools is a test dependency")
    from trainlab.cli import main

    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "data"))
    out = tmp_path / "coco"
    assert main(["data", "export", "fmnist-scenes", "--split", "test", "--n", "40", "--out", str(out)]) == 0
    capsys.readouterr()
    scenes = load_scenes("fmnist-scenes", "test", n=40)  # the same cached split
    coco = coco_module.COCO(str(out / "instances_test.json"))
    assert sorted(coco.getImgIds()) == list(range(1, 41))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == scenes.classes
    masks = scenes.masks()
    expected_id = 1
    for i in range(len(scenes)):
        image = np.asarray(Image.open(out / coco.loadImgs(i + 1)[0]["file_name"]))
        assert np.array_equal(image, scenes.images[i, 0].numpy())
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[i + 1]))
        assert len(annotations) == int((scenes.labels[i] >= 0).sum())
        for j, a in enumerate(sorted(annotations, key=lambda a: a["id"])):
            assert a["id"] == expected_id and a["iscrowd"] == 0
            expected_id += 1
            assert a["category_id"] == scenes.labels[i, j] + 1
            x1, y1, x2, y2 = scenes.boxes[i, j].tolist()
            assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert np.array_equal(coco.annToMask(a).astype(bool), masks[i, j].numpy())
            assert a["area"] == int(masks[i, j].sum())
    with pytest.raises(SystemExit, match="2"):  # argparse refuses it
        main(["data", "export", "fmnist-scenes", "--out", str(out), "--format", "yolo"])
