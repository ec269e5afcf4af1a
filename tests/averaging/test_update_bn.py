"""update_bn: after weight averaging, batch-norm statistics are the full training data's, and they matter."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tolerance import EPS, assert_float32_close
from trainlab.data.loader import DeviceLoader
from trainlab.training.averaging import StochasticWeightAveraging, image_batches, update_bn
from trainlab.training.trainer import Trainer


def brightness_varied_images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 1, 8, 8) whose per-image brightness varies, so batch means differ from batch to batch."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, 160, (n, 1, 1, 1), generator=g).float()
    return (offsets + torch.rand(n, 1, 8, 8, generator=g) * 90).to(torch.uint8)


def test_update_bn_gives_the_full_data_mean_and_variance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    images = brightness_varied_images(1000)
    seen = update_bn(model.eval(), image_batches(images, 100), lambda x: x)
    assert seen == 1000 and not model.training  # put back in the mode it was in
    with torch.no_grad():  # the conv's float32 outputs, batch by batch as update_bn computed them
        inputs = torch.cat([model[0](x) for x in image_batches(images, 100)]).double()
    mean = inputs.mean((0, 2, 3))
    var = inputs.permute(1, 0, 2, 3).reshape(4, -1).var(1)  # unbiased, over every image and position
    bn = model[1]
    # float64 sums, then one rounding to float32 of each statistic: within 1 eps of its magnitude
    assert_float32_close(bn.running_mean, mean, ops=1, scale=mean.abs())
    assert_float32_close(bn.running_var, var, ops=1, scale=var)
    assert ((bn.running_var.double() - var).abs() / var).max() <= 1e-5  # the bound, a fortiori

    # torch's recipe (momentum=None) averages the per-batch variances and misses the variance of the batch
    # means: beyond the bound here, which is why update_bn sums x and x^2 instead
    reference = copy.deepcopy(model).train()
    reference[1].reset_running_stats()
    reference[1].momentum = None
    with torch.no_grad():
        for x in image_batches(images, 100):
            reference(x)
    assert ((reference[1].running_var.double() - var).abs() / var).max() > 1e-5


def test_update_bn_leaves_a_model_without_batch_norm_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    before = copy.deepcopy(model.state_dict())
    assert update_bn(model, image_batches(brightness_varied_images(10), 5), lambda x: x) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def noisy_prototypes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 10-class problem hard enough that weights move far at a high learning rate: uint8 (n, 1, 8, 8)
    class prototypes under heavy noise, and their labels."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 1, 8, 8, generator=g) * 255
    labels = torch.randint(0, 10, (n,), generator=g)
    noise = torch.randn(n, 1, 8, 8, generator=g) * 250
    return (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8), labels


def bn_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def test_swa_then_update_bn_beats_swa_with_averaged_statistics_by_a_measured_margin():
    """SWA at a high constant learning rate (0.6, from epoch 2 of 6) on a small BN net, seed fixed. The
    averaged model with the averaged running statistics (what timm's avg_checkpoints leaves) against the
    same weights after update_bn, on 2,000 held-out images: the paired per-image loss difference must
    exceed 3 of its own standard errors, a margin measured from these losses, not assumed."""
    images, labels = noisy_prototypes(6000)
    torch.manual_seed(1)
    model = bn_mlp()
    swa = StochasticWeightAveraging(2)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.6, momentum=0.9), epochs=6, callbacks=[swa]
    )
    trainer.fit(DeviceLoader(images[:4000], labels[:4000], 64, shuffle=True, drop_last=True, seed=0))
    assert swa.count == 5 and trainer.eval_model is trainer.averaged_model

    def per_image_loss(m: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return F.cross_entropy(m.eval()(images[4000:].float() / 255), labels[4000:], reduction="none")

    averaged_statistics = per_image_loss(trainer.averaged_model)
    update_bn(trainer.averaged_model, image_batches(images[:4000], 64), lambda x: x)
    recomputed = per_image_loss(trainer.averaged_model)
    gain = averaged_statistics - recomputed  # (2000,) paired differences
    standard_error = gain.std() / len(gain) ** 0.5
    assert gain.mean() > 3 * standard_error, (gain.mean(), standard_error)
    assert standard_error > 100 * EPS  # a real spread, not two identical models


@pytest.mark.parametrize(
    "averaging",
    [{"train.swa_start": 2, "train.swa_lr": 0.05}, {"train.ema": 0.9}, {"train.average_top_k": 2}],
    ids=["swa", "ema", "top-k"],
)
def test_a_run_recomputes_batch_norm_after_averaging_by_default(tiny_mnist, averaging):
    """train.update_bn is on by default: after SWA, EMA or top-k averaging, the evaluated model's batch-norm
    statistics are recomputed for its own weights on the clean training images; with update_bn=false
    they stay the averaged (EMA: copied) ones, and nothing else differs."""
    import trainlab

    small = {
        "data.dataset": "mnist", "data.limit_train": 256, "data.val_size": 44, "data.batch_size": 64,
        "model.widths": [8, 8, 16], "train.epochs": 3, "train.device": "cpu", "data.augment": "hflip",
        **averaging,
    }  # fmt: skip
    on = trainlab.load_config("default", small)
    assert on.train.update_bn
    runs = {"on": on, "off": trainlab.load_config("default", {**small, "train.update_bn": False})}
    weights = {name: trainlab.train(cfg, progress=False).model.state_dict() for name, cfg in runs.items()}
    stats = [k for k in weights["on"] if k.endswith(("running_mean", "running_var"))]
    same = [torch.equal(weights["on"][k], weights["off"][k]) for k in weights["on"] if k not in stats]
    assert stats and all(same)
    assert all(not torch.equal(weights["on"][k], weights["off"][k]) for k in stats)
