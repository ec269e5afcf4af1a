"""Instance segmentation by centre-based grouping: the centre and offset targets point every item pixel at
its item's centre of mass; decoding the perfect outputs gives back every ground-truth mask, label and box
(mask AP and box AP 1 through trainlab's COCO evaluator); the network's three losses fall on a tiny
overfit, and its decoded masks approach the truth."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import trainlab
from tests.tasks.test_segmentation import fake_scenes
from trainlab.data.loader import DeviceLoader
from trainlab.tasks.instance import (
    DX,
    DY,
    HEAT,
    NUM_OUTPUTS,
    SIGMA,
    centre_targets,
    decode,
    instance_loss,
    item_masks,
)
from trainlab.tasks.segmentation import semantic_map


def perfect_outputs(targets: dict) -> torch.Tensor:
    """What a perfect network outputs: one-hot semantic scores, the target heatmap and offsets."""
    heat, offsets = centre_targets(targets)
    outputs = torch.zeros(len(heat), NUM_OUTPUTS, *heat.shape[1:])
    outputs[:, :HEAT] = F.one_hot(semantic_map(targets), HEAT).permute(0, 3, 1, 2) * 20.0
    outputs[:, HEAT], outputs[:, DY : DX + 1] = heat, offsets
    return outputs


def test_centre_targets_point_each_pixel_at_its_items_centre_of_mass():
    instances = torch.zeros(1, 16, 16, dtype=torch.uint8)
    instances[0, 2:6, 3:9] = 1  # rows 2..5, columns 3..8: centre (3.5, 5.5)
    instances[0, 10:13, 10:12] = 2  # rows 10..12, columns 10, 11: centre (11, 10.5)
    targets = {"labels": torch.tensor([[4, 7, -1]]), "boxes": torch.zeros(1, 3, 4), "instances": instances}
    heat, offsets = centre_targets(targets)
    assert offsets[0, :, 2, 3].tolist() == [1.5, 2.5] and offsets[0, :, 5, 8].tolist() == [-1.5, -2.5]
    assert offsets[0, :, 12, 10].tolist() == [-1.0, 0.5]
    assert (offsets[0, :, instances[0] == 0] == 0).all()
    assert heat[0, 11, 10] == math.exp(-0.25 / (2 * SIGMA**2))  # half a pixel from the centre
    assert heat[0, 3, 5] == heat[0, 4, 6]  # both half a pixel from (3.5, 5.5) in each direction


def test_decoding_perfect_outputs_gives_back_every_ground_truth_mask():
    _, targets = fake_scenes(12)
    dets = decode(perfect_outputs(targets))
    gt = item_masks(targets)
    assert len(dets.image) == int((targets["labels"] >= 0).sum())
    for scene, label, box, mask in zip(dets.image, dets.labels, dets.boxes, dets.masks, strict=True):
        (slot,) = [k for k in range(3) if gt[scene, k].equal(mask)]  # exactly one item's visible pixels
        assert label == targets["labels"][scene, slot] and box.equal(targets["boxes"][scene, slot])


def test_perfect_outputs_score_mask_and_box_ap_one():
    _, targets = fake_scenes(12)
    metrics = trainlab.create_task("instance").evaluate(perfect_outputs(targets), targets)
    assert metrics["mask_ap"] == metrics["box_ap"] == metrics["miou"] == 1.0


def test_every_loss_term_falls_on_a_tiny_overfit():
    images, targets = fake_scenes(8)
    torch.manual_seed(0)
    model = trainlab.create_model("instance_unet", widths=[8, 16, 32])
    task = trainlab.create_task("instance")
    x = images.float() / 255
    with torch.no_grad():
        before = instance_loss(model(x), targets)
    trainer = trainlab.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), epochs=100, task=task)
    trainer.fit(DeviceLoader(images, targets, 8, shuffle=True))
    model.train()  # the batch statistics of training: this checks the fit, not BN's running averages
    with torch.no_grad():
        after = instance_loss(model(x), targets)
    assert all(after[k] < 0.3 * before[k] for k in before), (before, after)


def test_the_dice_option_adds_the_soft_dice_loss_to_the_semantic_term_only():
    from trainlab.errors import ConfigError
    from trainlab.tasks.segmentation import soft_dice_loss

    _, targets = fake_scenes(4)
    torch.manual_seed(0)
    outputs = torch.randn(4, NUM_OUTPUTS, *targets["instances"].shape[1:])
    plain, dice = instance_loss(outputs, targets), instance_loss(outputs, targets, dice=True)
    dice_term = soft_dice_loss(outputs[:, :HEAT], semantic_map(targets))
    assert dice_term > 0.1  # random scores are far from the masks
    torch.testing.assert_close(dice["semantic"], plain["semantic"] + dice_term, rtol=0, atol=0)
    assert dice["centre"] == plain["centre"] and dice["offset"] == plain["offset"]
    task = trainlab.create_task("instance", loss="ce+dice")
    assert task.loss(outputs, targets) > trainlab.create_task("instance").loss(outputs, targets)
    with pytest.raises(ConfigError, match=r"^task.loss='dice': expected one of ce, ce\+dice$"):
        trainlab.create_task("instance", loss="dice")
