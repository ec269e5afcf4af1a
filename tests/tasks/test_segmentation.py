"""Semantic segmentation: the semantic map is label + 1 on an item's visible pixels; mIoU from a confusion
matrix follows the VOC formula (an absent class excluded, a class only predicted counts with IoU 0); the
matrix summed over batches is the whole split's; the U-Net keeps the input's size and, trained through
the Trainer, fits a few scenes to a high mIoU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import trainlab
from trainlab.data.loader import DeviceLoader
from trainlab.errors import ConfigError
from trainlab.tasks import segmentation
from trainlab.tasks.segmentation import add_confusion, iou_per_class, mean_iou, semantic_map

DOUBLE_EPS = torch.finfo(torch.float64).eps


def fake_scenes(n: int, size: int = 32, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """(uint8 images (n, 1, S, S), targets) of the scenes' format: item j is a rectangle of class c, grey
    level 40 + 23 c on dark noise, in quadrant j but up to 3 pixels past it, so that it may hide part of
    an earlier item (item j lies on top of items < j). The second half of the scenes has one item fewer."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n, k), generator=g)
    labels[n // 2 :, -1] = -1
    images = torch.randint(0, 30, (n, 1, size, size), generator=g).to(torch.uint8)
    instances = torch.zeros(n, size, size, dtype=torch.uint8)
    half = size // 2
    for i in range(n):
        for j in range(k):
            if labels[i, j] < 0:
                continue
            h, w = (int(v) for v in torch.randint(half // 2, half, (2,), generator=g))
            y = (j // 2) * half + int(torch.randint(0, half - h + 4, (), generator=g))
            x = (j % 2) * half + int(torch.randint(0, half - w + 4, (), generator=g))
            instances[i, y : y + h, x : x + w] = j + 1
            images[i, 0, y : y + h, x : x + w] = 40 + 23 * int(labels[i, j])
    boxes = torch.zeros(n, k, 4)
    for i, j in (labels >= 0).nonzero().tolist():
        rows, cols = (instances[i] == j + 1).nonzero().unbind(1)
        boxes[i, j] = torch.tensor(
            [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32
        )
    return images, {"labels": labels, "boxes": boxes, "instances": instances}


def test_semantic_map_is_label_plus_one_on_each_items_pixels():
    _, targets = fake_scenes(6)
    expected = torch.zeros(6, 32, 32, dtype=torch.long)
    for i in range(6):
        for j in range(3):
            expected[i][targets["instances"][i] == j + 1] = int(targets["labels"][i, j]) + 1
    assert torch.equal(semantic_map(targets), expected)
    assert (semantic_map(targets) == 0).equal(targets["instances"] == 0)


def test_miou_matches_the_hand_computed_value():
    # rows: true class, columns: predicted. Class 2 is in neither (excluded); class 3 is only predicted.
    confusion = torch.tensor([[5, 1, 0, 1], [2, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    # IoU_0 = 5 / (7 + 7 - 5), IoU_1 = 3 / (5 + 4 - 3), IoU_3 = 0 / (0 + 1 - 0)
    iou = iou_per_class(confusion)
    assert iou[[0, 1, 3]].tolist() == [5 / 9, 0.5, 0.0] and iou[2].isnan()
    # a mean of three float64 values: a few roundings of the result
    assert mean_iou(confusion) == pytest.approx((5 / 9 + 0.5 + 0.0) / 3, rel=4 * DOUBLE_EPS)
    assert mean_iou(confusion, skip_background=True) == pytest.approx(0.25, rel=4 * DOUBLE_EPS)


def test_perfect_scores_give_miou_one_and_absent_classes_do_not_count():
    _, targets = fake_scenes(8)
    logits = F.one_hot(semantic_map(targets), 11).permute(0, 3, 1, 2).float() * 10
    metrics = segmentation.Segmentation().evaluate(logits, targets)
    assert metrics["miou"] == metrics["miou_objects"] == metrics["pixel_accuracy"] == 1.0
    present = set(semantic_map(targets).unique().tolist())
    assert len(present) < 11  # some classes are absent from 8 scenes, and no NaN leaks into the mean
    report = segmentation.Segmentation().report(logits, targets, [str(c) for c in range(10)])
    ious = list(report["per_class_iou"].values())
    assert [c for c, v in enumerate(ious) if v == v] == sorted(present)


def test_confusion_summed_over_batches_equals_the_whole_splits(monkeypatch):
    _, targets = fake_scenes(10, size=16)
    logits = torch.randn(10, 11, 16, 16, generator=torch.Generator().manual_seed(1))
    truth, predicted = semantic_map(targets).flatten(), logits.argmax(1).flatten()
    expected = torch.zeros(11, 11, dtype=torch.long)
    for t, p in zip(truth.tolist(), predicted.tolist(), strict=True):
        expected[t, p] += 1
    monkeypatch.setattr(segmentation, "CHUNK", 3)  # 4 uneven chunks
    assert torch.equal(segmentation.Segmentation().confusion(logits, targets), expected)
    batched = torch.zeros(11, 11, dtype=torch.long)
    for s in range(0, 10, 4):
        add_confusion(batched, logits[s : s + 4], semantic_map({k: v[s : s + 4] for k, v in targets.items()}))
    assert torch.equal(batched, expected)


ENCODERS = {"plain": [4, 8, 8, 8], "speednet": [8, 8, 8]}  # the speednet encoder's stem adds a level


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("size", [64, 32, 28])
def test_unet_output_has_the_inputs_size_and_eleven_channels(size, encoder):
    model = trainlab.create_model(
        "unet", num_classes=10, image_size=size, widths=ENCODERS[encoder], encoder=encoder
    )
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 11, size, size)


def test_unet_names_a_bad_encoder_and_bad_fine_widths():
    with pytest.raises(ConfigError, match="model.encoder='resnet': expected 'plain' or 'speednet'"):
        trainlab.create_model("unet", encoder="resnet")
    with pytest.raises(ConfigError, match="model.fine_widths=.*expected two widths"):
        trainlab.create_model("unet", encoder="speednet", fine_widths=[8])

    with pytest.raises(ConfigError, match="model.coarse_scores: only the speednet encoder"):
        trainlab.create_model("unet", encoder="plain", coarse_scores=True)


@pytest.mark.parametrize(("name", "scores"), [("unet", 11), ("instance_unet", 11)])
@pytest.mark.parametrize("size", [64, 28])
def test_coarse_scores_add_the_upsampled_stride_4_scores_to_the_leading_outputs(name, scores, size):
    """coarse_scores: the first 11 outputs are the fine head's plus the stride-4 head's, upsampled
    bilinearly; the other outputs (the instance net's heatmap and offsets) are the fine head's alone."""
    torch.manual_seed(0)
    model = trainlab.create_model(name, encoder="speednet", widths=[8, 8, 8], coarse_scores=True).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        torch.nn.init.normal_(model.coarse_head.weight)
        out = model(x)
        coarse_head, model.coarse_head = model.coarse_head, None
        fine = model(x)  # the same network without the stride-4 scores
        skips = [x, model.encoder.stem_act(model.encoder.stem(x))]
        for group in model.encoder.groups[:-1]:
            skips.append(group(skips[-1]))
        stride_4 = segmentation_decode(model, skips)
        added = F.interpolate(coarse_head(stride_4), size=(size, size), mode="bilinear")
    assert out.shape == fine.shape
    assert torch.equal(out[:, :scores], fine[:, :scores] + added)  # the same operations, in the same order
    assert torch.equal(out[:, scores:], fine[:, scores:])
    assert (out[:, :scores] - fine[:, :scores]).abs().max() > 0.1


def segmentation_decode(model, skips):
    """The speednet U-Net's decoder up to stride 4, from the encoder's maps (input, stem, groups)."""
    from trainlab.models.unet import decode

    y = model.encoder.groups[-1](skips[-1])
    k = model.coarse_levels
    return decode(model.upsample[:k], model.up[:k], y, list(skips))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_unet_fits_eight_scenes_through_the_trainer(encoder):
    images, targets = fake_scenes(8)
    torch.manual_seed(0)
    model = trainlab.create_model("unet", widths=[8, 16, 32], encoder=encoder)
    task = trainlab.create_task("segmentation")
    epochs = {"plain": 100, "speednet": 200}[encoder]  # the 2x2 patch stem is slower to memorise
    trainer = trainlab.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), epochs=epochs, task=task)
    history = trainer.fit(DeviceLoader(images, targets, 8, shuffle=True))
    metrics = trainer.evaluate(DeviceLoader(images, targets, 8))
    assert history[-1]["train_loss"] < 0.2 * history[0]["train_loss"]
    assert metrics["miou"] > 0.95 and metrics["pixel_accuracy"] > 0.99
