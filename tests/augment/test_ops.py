"""Every registered augmentation: dtype, shape, range, no NaN, determinism, per-sample randomness."""

import pytest
import torch

from trainlab.data.augment import AUGMENTATIONS, Augment, list_augmentations
from trainlab.data.augment.spec import build_op

OPS = list_augmentations()
MIXING = {"mixup", "cutmix"}
FIXED = {
    "hflip",
    "vflip",
    "grayscale",
    "equalize",
    "autocontrast",
    "posterize",
    "solarize",
}  # by default only p is random


def batch(dtype: torch.dtype, channels: int = 3, n: int = 8, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, channels, size, size, generator=g)
    x[:, :, 4:10, 5:12] *= 0.3  # some structure, so equalize / autocontrast have work to do
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


def always(name: str) -> Augment:
    """The op with p=1, so every sample is transformed."""
    return Augment({name: {"p": 1.0}}, seed=3, num_classes=10)


def test_registry_lists_the_lecture_operations():
    lecture = {"hflip", "vflip", "random_resized_crop", "scale_jitter", "pad_crop", "translate", "rotate"}
    lecture |= {"stretch", "shear", "scale", "lens_distortion", "elastic", "color_jitter", "pca_lighting"}
    lecture |= {"cutout", "random_erasing", "mixup", "cutmix", "randaugment", "trivialaugment"}
    assert lecture <= set(OPS)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dtype_shape_range_no_nan(name, dtype, channels):
    x, y = batch(dtype, channels), torch.arange(8) % 10
    out, targets = always(name)(x, y)
    assert out.dtype == dtype and out.shape == x.shape
    if dtype != torch.uint8:
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if name in MIXING:
        assert targets.shape == (8, 10) and torch.allclose(targets.sum(1), torch.ones(8))
    else:
        assert torch.equal(targets, y)


@pytest.mark.parametrize("name", OPS)
def test_does_not_modify_its_input(name):
    x = batch(torch.float32)
    before = x.clone()
    always(name)(x, torch.zeros(8, dtype=torch.long))
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", OPS)
def test_same_seed_same_output(name):
    x, y = batch(torch.float32), torch.arange(8) % 10
    a, ta = always(name)(x, y)
    b, tb = always(name)(x, y)
    assert torch.equal(a, b) and torch.equal(ta, tb)


@pytest.mark.parametrize("name", OPS)
def test_parameters_differ_between_samples(name):
    """One image repeated: with per-sample parameters (or per-sample coin flips) the copies differ."""
    x = batch(torch.float32, n=1).expand(16, 3, 16, 16).contiguous()
    x = torch.cat((x[:8], x[:8].flip(3)))  # mixing partners must differ too
    aug = Augment({name: {"p": 0.5}}, seed=3, num_classes=10) if name in FIXED else always(name)
    out, _ = aug(x, torch.arange(16) % 10)
    distinct = {tuple(o.flatten()[::7].tolist()) for o in out[:8]}
    assert len(distinct) > 1


@pytest.mark.parametrize("name", OPS)
def test_p_zero_is_identity(name):
    x = batch(torch.float32)
    out, _ = Augment({name: {"p": 0.0}}, num_classes=10)(x, torch.zeros(8, dtype=torch.long))
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("name", OPS)
def test_config_round_trips(name):
    op = build_op(name, {})
    aug = Augment({name: True}, num_classes=10)
    again = Augment.from_config(aug.get_config())
    assert again.get_config() == aug.get_config()
    assert AUGMENTATIONS.get(name) is type(op)
