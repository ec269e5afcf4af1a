"""The localization task: its metrics on outputs whose IoUs are known by construction, its loss at the
targets, the per-step sums against the whole-split evaluation, and a tiny overfit through locnet."""

from __future__ import annotations

import pytest
import torch

from tests.tolerance import EPS, assert_float32_close
from trainlab.data.scenes import load_scenes
from trainlab.errors import ConfigError
from trainlab.models import create_model
from trainlab.tasks import create_task

SIDE = 64
TRUE = torch.tensor(
    [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 30.0], [5.0, 5.0, 25.0, 45.0], [0.0, 0.0, 8.0, 8.0]]
)
# IoU with TRUE, by hand: half the box; the box itself; half the box again; touching at a corner only
PRED = torch.tensor(
    [[0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 40.0, 30.0], [5.0, 5.0, 25.0, 25.0], [8.0, 8.0, 16.0, 16.0]]
)
IOU = torch.tensor([0.5, 1.0, 400 / 800, 0.0])
LABELS = torch.tensor([1, 2, 3, 4])
PREDICTED = torch.tensor([1, 2, 0, 4])  # the third class wrong


def outputs_of(predicted=PREDICTED, boxes=PRED, sharpness=20.0) -> torch.Tensor:
    logits = torch.nn.functional.one_hot(predicted, 10).float() * sharpness
    return torch.cat([logits, boxes], 1)


def targets_of(labels=LABELS, boxes=TRUE) -> dict[str, torch.Tensor]:
    n = len(labels)
    return {
        "labels": labels[:, None],
        "boxes": boxes[:, None],
        "instances": torch.zeros(n, SIDE, SIDE, dtype=torch.uint8),
    }


def test_the_metrics_of_constructed_outputs():
    metrics = create_task("localization").evaluate(outputs_of(), targets_of())
    assert metrics["accuracy"] == 0.75
    assert_float32_close(metrics["mean_iou"], IOU.mean(), ops=8, scale=1)
    # class right and IoU >= 0.5: the first (IoU exactly 0.5 counts) and the second
    assert metrics["loc_accuracy"] == 0.5


def test_the_step_sums_give_the_whole_split_metrics():
    task = create_task("localization")
    sums = task.metric_sums(torch.device("cpu"))
    for part in (slice(0, 1), slice(1, 4)):
        task.accumulate(sums, outputs_of()[part], {k: v[part] for k, v in targets_of().items()})
    whole = task.evaluate(outputs_of(), targets_of())
    for name in ("accuracy", "mean_iou", "loc_accuracy"):
        assert_float32_close(float(sums[name]) / len(LABELS), whole[name], ops=8, scale=1)


def test_the_box_terms_are_zero_at_the_targets_and_grow_away_from_them():
    task = create_task("localization")
    exact = task.loss_terms(outputs_of(LABELS, TRUE), targets_of())
    assert float(exact["smooth_l1"]) == 0 and abs(float(exact["giou"])) <= 4 * EPS
    assert float(exact["ce"]) <= 9 * torch.exp(torch.tensor(-20.0)) * (1 + EPS)  # 9 wrong logits, 20 below
    moved = task.loss_terms(outputs_of(LABELS, TRUE + 2.0), targets_of())
    assert float(moved["smooth_l1"]) > 0 and float(moved["giou"]) > 0
    # giou still has a gradient when the boxes do not overlap (the fourth pair), unlike 1 - IoU
    boxes = PRED.clone().requires_grad_(True)
    task.loss(torch.cat([outputs_of()[:, :10], boxes], 1), targets_of()).backward()
    assert boxes.grad[3].abs().sum() > 0


@pytest.mark.parametrize("loss", ["ce+smooth_l1", "ce+giou", "ce+smooth_l1+giou"])
def test_each_loss_combination_has_its_terms(loss):
    terms = create_task("localization", loss=loss).loss_terms(outputs_of(), targets_of())
    assert set(terms) == set(loss.split("+"))


@pytest.mark.parametrize("loss", ["smooth_l1", "ce", "ce+l2", ""])
def test_a_bad_loss_is_one_config_error(loss):
    with pytest.raises(ConfigError, match="task.loss="):
        create_task("localization", loss=loss)


def test_decode_gives_one_detection_per_image_with_its_probability():
    dets = create_task("localization").decode(outputs_of(sharpness=1.0))
    assert torch.equal(dets.image, torch.arange(4)) and torch.equal(dets.labels, PREDICTED)
    assert torch.equal(dets.boxes, PRED)
    expected = torch.softmax(outputs_of(sharpness=1.0)[:, :10], 1).max(1).values
    assert torch.equal(dets.scores, expected)


def test_locnet_puts_out_pixel_boxes_inside_the_canvas():
    out = create_model("locnet", image_size=SIDE)(torch.randn(3, 1, SIDE, SIDE))
    boxes = out[:, 10:]
    assert out.shape == (3, 14)
    assert torch.all(boxes[:, 2:] >= boxes[:, :2])
    assert torch.all(((boxes[:, :2] + boxes[:, 2:]) / 2 >= 0) & ((boxes[:, :2] + boxes[:, 2:]) / 2 <= SIDE))


def test_the_loss_decreases_on_a_tiny_overfit(tmp_path):
    scenes = load_scenes("fmnist-scenes:localize", "train", n=8, cache_dir=tmp_path)
    torch.manual_seed(0)
    model, task = create_model("locnet", image_size=SIDE), create_task("localization")
    x, targets = scenes.images.float() / 255, scenes.targets()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = task.loss(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
