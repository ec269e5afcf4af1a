"""The accelerator path of every augmentation, run on the CPU: transform all samples and keep the
chosen ones with `where` (no host sync) must give the same images as the CPU path's gather."""

from __future__ import annotations

import pytest
import torch

from trainlab.data.augment import Augment, list_augmentations


def images(n: int = 16, channels: int = 3, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, channels, size, size, generator=g)
    x[:, :, 4:10, 5:12] *= 0.3
    return x


@pytest.mark.parametrize("name", list_augmentations())
def test_accelerator_path_gives_the_cpu_paths_images(name, force_accelerator_path):
    spec = {name: {"p": 0.5}}  # half the samples chosen: the path that differs
    x, y = images(), torch.arange(16) % 10
    cpu_out, cpu_targets = Augment(spec, seed=5, num_classes=10)(x, y)
    force_accelerator_path()
    acc_out, acc_targets = Augment(spec, seed=5, num_classes=10)(x, y)
    torch.testing.assert_close(acc_out, cpu_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(acc_targets, cpu_targets)
    assert not torch.equal(cpu_out, x) or name in ("grayscale",)  # the op did something


@pytest.mark.parametrize(
    "name", ["randaugment", "trivialaugment", "hflip", "random_erasing", "lens_distortion"]
)
def test_accelerator_path_is_taken(name, force_accelerator_path):
    calls = force_accelerator_path()
    Augment({name: {"p": 0.5}}, seed=5, num_classes=10)(images(), torch.zeros(16, dtype=torch.long))
    assert calls, f"{name} never asked avoid_host_sync"
