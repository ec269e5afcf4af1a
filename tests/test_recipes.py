"""Every shipped recipe resolves, builds its model and its augmentation; SpeedNet's patch-whitening
stem really whitens."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.tolerance import assert_float32_close
from trainlab.config import load_config, recipe_names
from trainlab.data.augment import Augment
from trainlab.data.preprocess import Standardizer
from trainlab.models import create_model, model_from_config
from trainlab.nn.init import init_model


# the scenes recipes (64x64 scenes, vision tasks) are checked in tests/test_vision_run.py
@pytest.mark.parametrize("name", [n for n in recipe_names() if not n.startswith("scenes-")])
def test_recipe_builds(name):
    cfg = load_config(name)
    model = model_from_config(cfg, (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    Augment(cfg.data.augment, seed=0, num_classes=10)


def test_expected_recipes_ship():
    assert {"default", "cpu-fast", "speedrun", "best"} <= set(recipe_names())


def test_patch_whitening_gives_decorrelated_unit_variance_patches(fashion_mnist):
    x = Standardizer("channel_mean_std").fit(fashion_mnist.train_images[:4096])(
        fashion_mnist.train_images[:1024]
    )
    model = create_model("speednet", widths=[8, 8, 8])
    init_model(model, "patch_whitening", batch=x)
    with torch.no_grad():  # the + half of the filters, (N * 14 * 14, 4); and sum |w p| + |b| per feature
        features = model.stem(x).permute(0, 2, 3, 1).reshape(-1, 8)[:, :4].double()
        terms = torch.nn.functional.conv2d(x.abs(), model.stem.weight.abs(), model.stem.bias.abs(), stride=2)
        terms = terms.permute(0, 2, 3, 1).reshape(-1, 8)[:, :4].double()
    # feature i is v_i^T (p - mean) / sqrt(lambda_i + eps), eps = 5e-4, in the filters' (ascending) order:
    # its variance is lambda_i / (lambda_i + eps), and the features are uncorrelated
    patches = x.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(-1, 4).double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(patches.T))
    # float32 filters (1 rounding) applied in 4 products and 4 sums with the bias: each feature is within
    # 9 u of its terms, so each covariance within 9 eps of the mean product of the terms
    white = torch.diag(eigenvalues / (eigenvalues + 5e-4))
    assert_float32_close(torch.cov(features.T), white, ops=9, scale=terms.T @ terms / len(terms))
    assert torch.allclose(model.stem.weight[:4], -model.stem.weight[4:])


def test_gpu_recipe_paths_run_on_cpu_at_small_size(tmp_path):
    """speedrun's CUDA path (bf16 autocast, channels_last, EMA, flip TTA, translate) on a small CPU run."""
    from trainlab.run import train
    from trainlab.training.callbacks import Callback

    seen = {}

    class Probe(Callback):
        def on_train_begin(self, trainer):
            conv = trainer.model.groups[0][0]
            conv.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype, cl=i[0].is_contiguous(
                memory_format=torch.channels_last), cl_weight=m.weight.is_contiguous(
                memory_format=torch.channels_last)))  # fmt: skip

    overrides = {
        "train.device": "cpu", "train.compile": False, "train.precision": "bf16", "train.channels_last": True,
        "data.limit_train": 1024, "data.val_size": 256, "data.limit_test": 1024, "train.epochs": 2,
        "data.batch_size": 64, "model.widths": [16, 32, 32], "train.ema": 0.9, "optim.lr": 0.4,
    }  # fmt: skip
    result = train(load_config("speedrun", overrides), tmp_path / "run", callbacks=[Probe()], progress=False)
    assert seen == {"dtype": torch.bfloat16, "cl": True, "cl_weight": True}
    assert result.summary["test_accuracy"] > 0.25  # learns (chance is 0.1; 0.41 measured) in 32 steps


@pytest.mark.parametrize(("stride", "side"), [(1, 27), (2, 14)])
def test_speednet_stem_stride_sets_the_resolution(stride, side):
    model = create_model("speednet", widths=[8, 8, 8], stem_stride=stride)
    assert model.stem(torch.zeros(2, 1, 28, 28)).shape == (2, 8, side, side)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_speednet_rejects_other_stem_strides():
    from trainlab.errors import ConfigError

    with pytest.raises(ConfigError, match="stem_stride must be 1 or 2"):
        create_model("speednet", stem_stride=3)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile's CPU backend needs a C++ compiler")
def test_speednet_compiled_in_bf16_matches_eager():
    """The speedrun recipe's training graph (torch.compile, bf16 autocast, channels_last), compiled by
    inductor's CPU backend: finite, and the same loss and gradients as eager. (x.amax((2, 3)) as the
    global pooling gave NaN gradients here.)"""
    torch.manual_seed(0)
    model = create_model("speednet", widths=[8, 16, 16]).to(memory_format=torch.channels_last)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    init_model(model, "patch_whitening", batch=x)
    y = torch.arange(32) % 10

    def loss_and_grads(forward):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = loss_and_grads(model)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(model))
    assert torch.isfinite(compiled_loss) and all(torch.isfinite(g).all() for g in compiled_grads)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=0.02, rtol=0.02)
    for eager, compiled in zip(eager_grads, compiled_grads):
        assert torch.nn.functional.cosine_similarity(eager.flatten(), compiled.flatten(), dim=0) > 0.95
