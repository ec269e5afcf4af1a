"""Scene augmentation moves the boxes and masks with the image: after a flip, a shift or a zoom, every
box is still the tight box of its moved mask, and it sits where the map puts the old box."""

from __future__ import annotations

import pytest
import torch

from tests.tolerance import EPS
from trainlab.data.augment.scenes import augment_scenes
from trainlab.data.scenes import make_scenes
from trainlab.errors import ConfigError

SIZE = 64


@pytest.fixture(scope="module")
def scenes(fashion_mnist):
    return make_scenes(fashion_mnist.train_images[:55_000], fashion_mnist.train_labels[:55_000], n=48, seed=1)


def augment(scenes, seed=0, **options):
    g = torch.Generator().manual_seed(seed)
    return augment_scenes(scenes.images.float() / 255, scenes.targets(), g, **options)


def reference_box(mask: torch.Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def assert_consistent(targets, old_labels):
    """Tight boxes of the masks; labels -1 exactly past the items; survivors keep their labels, in order."""
    labels, boxes, instances = targets["labels"], targets["boxes"], targets["instances"]
    for i in range(len(labels)):
        count = int((labels[i] >= 0).sum())
        assert (labels[i, :count] >= 0).all() and (labels[i, count:] == -1).all()
        assert int(instances[i].max()) == count
        for j in range(count):
            assert boxes[i, j].tolist() == reference_box(instances[i] == j + 1)
        assert (boxes[i, count:] == 0).all()
        old = old_labels[i][old_labels[i] >= 0].tolist()
        it = iter(old)
        assert all(any(label == o for o in it) for label in labels[i, :count].tolist())  # a subsequence


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x (..., H, W) moved right by dx and down by dy, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_a_flip_mirrors_image_masks_and_boxes_exactly(scenes):
    images, targets = augment(scenes, flip=True)
    original = scenes.images.float() / 255
    flipped = 0
    for i in range(len(scenes)):
        mirror = bool((targets["instances"][i] != scenes.instances[i]).any())
        flipped += mirror
        want = scenes.instances[i].flip(-1) if mirror else scenes.instances[i]
        assert torch.equal(targets["instances"][i], want)
        x1, y1, x2, y2 = scenes.boxes[i].unbind(-1)
        box = torch.stack((SIZE - x2, y1, SIZE - x1, y2), -1) * (scenes.labels[i, :, None] >= 0)
        assert torch.equal(targets["boxes"][i], box if mirror else scenes.boxes[i])
        # grid coordinates carry a few roundings, each magnified by SIZE / 2 when they become pixels
        image = original[i].flip(-1) if mirror else original[i]
        assert (images[i] - image).abs().max() <= 4 * SIZE * EPS
    assert 0 < flipped < len(scenes)
    assert torch.equal(targets["labels"], scenes.labels)


def test_an_integer_shift_moves_everything_by_that_shift_and_clips_the_boxes(scenes):
    t = 16  # large enough that some items leave the canvas
    scenes = scenes.index(slice(0, 24))  # the shift is searched for below: a few scenes suffice
    images, targets = augment(scenes, flip=False, translate=t)
    assert_consistent(targets, scenes.labels)
    removed = partly = 0
    for i in range(len(scenes)):
        matches = [
            (dx, dy)
            for dx in range(-t, t + 1)
            for dy in range(-t, t + 1)
            if torch.equal(shifted(scenes.instances[i], dx, dy) > 0, targets["instances"][i] > 0)
        ]
        dx, dy = matches[0]  # shifts that keep every pixel in the canvas are unique, others may tie
        assert (images[i] - shifted(scenes.images[i].float() / 255, dx, dy)).abs().max() <= 4 * SIZE * EPS
        old = scenes.boxes[i][scenes.labels[i] >= 0]
        moved = old + torch.tensor([dx, dy, dx, dy])
        kept = [j for j in range(len(old)) if (shifted(scenes.instances[i], dx, dy) == j + 1).any()]
        removed += len(old) - len(kept)
        new, moved = targets["boxes"][i, : len(kept)], moved[kept]
        inside = ((moved[:, :2] >= 0) & (moved[:, 2:] <= SIZE)).all(1)
        assert torch.equal(new[inside], moved[inside])  # exactly the shifted box
        clipped = moved[~inside].clamp(0, SIZE)  # what is left of a clipped item lies in the clipped box
        assert (new[~inside][:, :2] >= clipped[:, :2]).all() and (new[~inside][:, 2:] <= clipped[:, 2:]).all()
        partly += int((~inside).sum())
    assert removed > 0 and partly > 0


def source_item(old_instances: torch.Tensor, new_mask: torch.Tensor, zoom: float) -> int:
    """The old slot a zoomed item came from: the most common old id under its pixels mapped back."""
    ys, xs = new_mask.nonzero(as_tuple=True)
    back = lambda v: ((v + 0.5 - SIZE / 2) / zoom + SIZE / 2).floor().long().clamp(0, SIZE - 1)  # noqa: E731
    return int(old_instances[back(ys), back(xs)].mode().values) - 1


@pytest.mark.parametrize("zoom", [1.0, 1.25, 1.6])
def test_a_zoom_in_puts_each_box_within_half_a_pixel_of_the_mapped_box(scenes, zoom):
    _, targets = augment(scenes, flip=False, scale=(zoom, zoom))
    assert_consistent(targets, scenes.labels)
    slack = 0.5 + 4 * SIZE * EPS  # nearest-neighbour rounding, plus the float32 grid's SIZE-scaled roundings
    cut = 0
    for i in range(len(scenes)):
        for j in range(int((targets["labels"][i] >= 0).sum())):
            old = source_item(scenes.instances[i], targets["instances"][i] == j + 1, zoom)
            assert targets["labels"][i, j] == scenes.labels[i, old]
            mapped, new = (scenes.boxes[i, old] - SIZE / 2) * zoom + SIZE / 2, targets["boxes"][i, j]
            if (mapped >= 0).all() and (mapped <= SIZE).all():
                assert ((new - mapped).abs() <= slack).all()
            else:  # cut by the edge: what is left lies in the clipped box
                clipped, cut = mapped.clamp(0, SIZE), cut + 1
                assert (new[:2] >= clipped[:2] - slack).all() and (new[2:] <= clipped[2:] + slack).all()
    assert cut > 0 or zoom == 1.0


def test_a_zoom_out_keeps_each_box_inside_the_mapped_box(scenes):
    zoom = 0.7
    _, targets = augment(scenes, flip=False, scale=(zoom, zoom))
    assert_consistent(targets, scenes.labels)
    slack = 0.5 + 4 * SIZE * EPS
    for i in range(len(scenes)):
        count = int((targets["labels"][i] >= 0).sum())
        mapped = (scenes.boxes[i, :count] - SIZE / 2) * zoom + SIZE / 2
        new = targets["boxes"][i, :count]
        assert (new[:, :2] >= mapped[:, :2] - slack).all() and (new[:, 2:] <= mapped[:, 2:] + slack).all()


def test_random_maps_keep_the_targets_consistent_and_a_seed_repeats_them(scenes):
    options = dict(flip=True, translate=6, scale=(0.8, 1.3))
    images, targets = augment(scenes, seed=3, **options)
    assert_consistent(targets, scenes.labels)
    again, targets_again = augment(scenes, seed=3, **options)
    assert torch.equal(images, again) and all(torch.equal(targets[k], targets_again[k]) for k in targets)
    other, _ = augment(scenes, seed=4, **options)
    assert not torch.equal(images, other)


@pytest.mark.parametrize(
    "options", [{"translate": -1}, {"translate": 1.5}, {"scale": (0, 1)}, {"scale": (1.2, 1.1)}]
)
def test_bad_options_are_config_errors(scenes, options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        augment(scenes, **options)
