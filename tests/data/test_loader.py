"""The device loader: every sample once per epoch, seeded order, resumable generator state."""

from __future__ import annotations

import pytest
import torch

from trainlab.data.loader import DeviceLoader


def make_loader(seed=0, **kw):
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1)
    return DeviceLoader(images, torch.arange(103), batch_size=10, seed=seed, **kw)


def epoch_labels(loader):
    return torch.cat([labels for _, labels in loader])


def test_each_sample_once_per_epoch_and_images_follow_labels():
    loader = make_loader(shuffle=True)
    seen = epoch_labels(loader)
    assert sorted(seen.tolist()) == list(range(103)) and len(loader) == 11
    for images, labels in loader:
        assert images.flatten().long().equal(labels)


def test_drop_last_and_no_shuffle_keeps_order():
    assert len(make_loader(shuffle=True, drop_last=True)) == 10
    assert epoch_labels(make_loader()).tolist() == list(range(103))


def test_same_seed_same_order_and_epochs_differ():
    a, b, c = make_loader(1, shuffle=True), make_loader(1, shuffle=True), make_loader(2, shuffle=True)
    first_a, first_b, first_c = epoch_labels(a), epoch_labels(b), epoch_labels(c)
    assert first_a.equal(first_b) and not first_a.equal(first_c)
    assert not epoch_labels(a).equal(first_a)  # a new permutation each epoch


def test_state_dict_resumes_the_stream():
    loader = make_loader(5, shuffle=True)
    epoch_labels(loader)
    state = loader.state_dict()
    expected = epoch_labels(loader)
    fresh = make_loader(99, shuffle=True)
    fresh.load_state_dict(state)
    assert epoch_labels(fresh).equal(expected)


@pytest.mark.parametrize("limit", [None, 7, 10**6])
def test_limit_test_keeps_the_first_test_images(tiny_mnist, limit):
    """data.limit_test: the first N test images (all of them when N is larger or unset)."""
    from trainlab.config import load_config
    from trainlab.data.datasets import load_dataset
    from trainlab.data.splits import make_loaders

    cfg = load_config("default", {"data.dataset": "mnist", "data.val_size": 50, "data.limit_test": limit})
    data = load_dataset("mnist")
    test = make_loaders(data, cfg, torch.device("cpu")).test
    kept = 100 if limit is None or limit > 100 else limit
    assert torch.equal(torch.cat([x for x, _ in test]), data.test_images[:kept])
    assert torch.equal(torch.cat([y for _, y in test]), data.test_labels[:kept])
