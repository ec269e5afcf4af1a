"""The detection task (CenterNet): its targets, its loss at and away from them, and its decoding, judged
by trainlab's COCO evaluator."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tolerance import EPS, assert_float32_close
from trainlab.data.scenes import load_scenes
from trainlab.errors import ConfigError
from trainlab.models import create_model
from trainlab.tasks import create_task
from trainlab.tasks.coco_eval import evaluate_coco
from trainlab.tasks.detection import PROB_CLAMP, centernet_targets, gaussian_radius

SIDE, STRIDE, C = 64, 4, 10
LABELS = torch.tensor([[3, 5, -1], [0, 3, 9]])
BOXES = torch.tensor(
    [
        [[10.0, 12.0, 30.0, 40.0], [40.0, 4.0, 60.0, 20.0], [0.0, 0.0, 0.0, 0.0]],
        [[1.0, 2.0, 15.0, 30.0], [30.0, 30.0, 55.0, 63.0], [17.0, 40.0, 30.0, 50.0]],
    ]
)


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory):
    """8 real scenes (1 to 6 Fashion-MNIST items each), generated into a temporary cache."""
    return load_scenes("fmnist-scenes", "train", n=8, cache_dir=tmp_path_factory.mktemp("scenes"))


def targets_of(labels=LABELS, boxes=BOXES):
    return {
        "labels": labels,
        "boxes": boxes,
        "instances": torch.zeros(len(labels), SIDE, SIDE, dtype=torch.uint8),
    }


def perfect_outputs(heat_logits: torch.Tensor | None = None, labels=LABELS, boxes=BOXES) -> torch.Tensor:
    """The model's outputs that its targets describe: the heatmap as logits, size and offset written at
    each object's cell."""
    t = centernet_targets(labels, boxes, C, (SIDE // STRIDE, SIDE // STRIDE), STRIDE)
    out = torch.zeros(len(labels), C + 4, SIDE // STRIDE, SIDE // STRIDE)
    out[:, :C] = torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6)) if heat_logits is None else heat_logits(t)
    b, k = t["valid"].nonzero(as_tuple=True)
    y, x = t["index"][b, k] // (SIDE // STRIDE), t["index"][b, k] % (SIDE // STRIDE)
    out[b, C : C + 2, y, x] = t["size"][b, k]
    out[b, C + 2 :, y, x] = t["offset"][b, k]
    return out


def test_the_heatmap_peaks_with_value_one_at_each_box_centre():
    t = centernet_targets(LABELS, BOXES, C, (16, 16), STRIDE)
    heat = t["heatmap"]
    assert heat.shape == (2, C, 16, 16) and heat.min() >= 0 and heat.max() <= 1
    for b, k in zip(*(LABELS >= 0).nonzero(as_tuple=True)):
        box, label = BOXES[b, k], LABELS[b, k]
        cx, cy = int((box[0] + box[2]) / 2 / STRIDE), int((box[1] + box[3]) / 2 / STRIDE)
        assert heat[b, label, cy, cx] == 1
        # the offset takes the centre back from its cell to its exact place
        assert torch.allclose((torch.tensor([cx, cy]) + t["offset"][b, k]) * STRIDE, (box[:2] + box[2:]) / 2)
        assert torch.equal(t["size"][b, k], box[2:] - box[:2])
    # 1 only at the centres, and nothing in the channels of the classes absent from a scene
    assert int((heat == 1).sum()) == int((LABELS >= 0).sum())
    assert heat[0, [c for c in range(C) if c not in (3, 5)]].abs().sum() == 0


def test_the_gaussian_radius_grows_with_the_box_and_vanishes_for_tiny_boxes():
    sides = torch.tensor([0.5, 2.0, 4.0, 8.0, 16.0])
    radius = gaussian_radius(sides, sides)
    assert radius[0] == 0 and torch.all(radius[1:] >= radius[:-1]) and radius[-1] > radius[1]
    assert torch.equal(radius, radius.floor())


def test_decoding_the_perfect_maps_gives_back_every_box_with_ap_one():
    task = create_task("detection")
    dets = task.decode(perfect_outputs())
    assert len(dets) == int((LABELS >= 0).sum())
    for b, k in zip(*(LABELS >= 0).nonzero(as_tuple=True)):
        found = (dets.image == b) & (dets.labels == LABELS[b, k])
        assert int(found.sum()) == 1
        # (cell + offset) * stride -/+ size / 2: a few roundings of values up to the canvas side
        assert_float32_close(dets.boxes[found][0], BOXES[b, k], ops=4, scale=SIDE)
    metrics = evaluate_coco(dets, LABELS, BOXES)
    assert metrics["ap"] == 1 and metrics["ap50"] == 1 and metrics["ar100"] == 1
    evaluated = task.evaluate(perfect_outputs(), targets_of())
    assert evaluated["ap"] == 1 and evaluated["class_agnostic_ap"] == 1


def test_decoding_keeps_the_top_k_peaks_above_the_threshold():
    task = create_task("detection")
    out = perfect_outputs()
    assert len(task.decode(out, top_k=2)) == 4  # two per image
    assert len(task.decode(out, threshold=1.0)) == 0
    # a second, weaker peak next to a true one is no peak: the 3x3 max-pool suppresses it
    b, label = 0, 3
    cy, cx = divmod(int(centernet_targets(LABELS, BOXES, C, (16, 16), STRIDE)["index"][b, 0]), 16)
    out[b, label, cy, cx + 1] = 5.0  # sigmoid 0.993 beside a peak of sigmoid(logit(1 - 1e-6))
    dets = task.decode(out)
    assert int(((dets.image == b) & (dets.labels == label)).sum()) == 1


def test_class_wise_nms_removes_a_duplicate_box():
    out = perfect_outputs()
    b, label = 0, 3
    index = centernet_targets(LABELS, BOXES, C, (16, 16), STRIDE)["index"][b, 0]
    cy, cx = divmod(int(index), 16)
    far = (cy, cx + 3)  # its own peak, but with the size and offset of the same box: a duplicate
    out[b, label, far[0], far[1]] = 0.0
    out[b, C : C + 2, far[0], far[1]] = out[b, C : C + 2, cy, cx]
    out[b, C + 2 :, far[0], far[1]] = out[b, C + 2 :, cy, cx] - torch.tensor([3.0, 0.0])
    plain = create_task("detection").decode(out)
    nms = create_task("detection", nms_iou=0.5).decode(out)
    assert len(plain) == len(nms) + 1


def test_the_loss_is_zero_at_sharp_targets_and_larger_elsewhere():
    task = create_task("detection")
    sharp = perfect_outputs(lambda t: torch.where(t["heatmap"] == 1, 30.0, -30.0))
    terms = task.loss_terms(sharp, targets_of())
    cells = sharp[:, :C].numel()
    # what the clamp of the sigmoid to [1e-4, 1 - 1e-4] leaves at worst, per cell, over the objects
    bound = cells * PROB_CLAMP**2 * -math.log(1 - PROB_CLAMP) / int((LABELS >= 0).sum())
    assert float(terms["focal"]) <= bound * (1 + EPS)
    assert float(terms["size"]) == 0 and float(terms["offset"]) == 0
    shifted = sharp.clone()
    shifted[:, C:] += 1.0
    assert float(task.loss(shifted, targets_of())) > float(task.loss(sharp, targets_of())) + 1.0


def test_the_losses_decrease_on_a_tiny_overfit(tiny_scenes):
    torch.manual_seed(0)
    model = create_model("centernet", image_size=SIDE)
    task = create_task("detection")
    x, targets = tiny_scenes.images.float() / 255, tiny_scenes.targets()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        terms = task.loss_terms(model(x), targets)
        loss = terms["focal"] + 0.1 * terms["size"] + terms["offset"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: float(v.detach()) for k, v in terms.items()})
    for name in ("focal", "size", "offset"):
        assert losses[-1][name] < 0.5 * losses[0][name], (name, losses[0][name], losses[-1][name])


def test_a_loss_other_than_focal_is_one_config_error():
    with pytest.raises(ConfigError, match="task.loss='mse'"):
        create_task("detection", loss="mse")
