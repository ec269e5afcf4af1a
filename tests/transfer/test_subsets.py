"""Class subsets (`NAME:classes=...`) and labels-per-class subsets (`data.per_class`)."""

from __future__ import annotations

import pytest
import torch

from trainlab.config import load_config
from trainlab.data.datasets import FASHION_CLASSES, load_dataset
from trainlab.data.splits import make_loaders, per_class_subset
from trainlab.errors import DataError


def test_class_subset_relabels_in_order_and_keeps_names(fashion_mnist):
    sub = load_dataset("fashion-mnist:classes=5-7,9")
    assert sub.classes == [FASHION_CLASSES[c] for c in (5, 6, 7, 9)]
    for new, old in enumerate((5, 6, 7, 9)):
        kept = fashion_mnist.train_images[fashion_mnist.train_labels == old]
        assert torch.equal(sub.train_images[sub.train_labels == new], kept)
        assert (sub.test_labels == new).sum() == (fashion_mnist.test_labels == old).sum()
    assert sub.train_labels.unique().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("options", ["classes=", "kinds=0-4", "classes=3", "classes=8-12", "classes=a-b"])
def test_bad_class_subsets_are_one_line_errors(options):
    with pytest.raises(DataError, match="fashion-mnist:") as e:
        load_dataset(f"fashion-mnist:{options}")
    assert "\n" not in str(e.value)


def test_per_class_is_stratified_seeded_and_a_subset():
    labels = torch.arange(1000) % 7  # 7 classes, about 143 each
    indices = torch.arange(1000) * 3 + 5  # positions in some larger dataset
    picked = per_class_subset(indices, labels, 10, seed=1)
    assert len(picked) == 70 and set(picked.tolist()) <= set(indices.tolist())
    assert ((picked - 5) // 3 % 7).bincount().tolist() == [10] * 7
    assert torch.equal(picked, per_class_subset(indices, labels, 10, seed=1))
    assert not torch.equal(picked, per_class_subset(indices, labels, 10, seed=2))
    with pytest.raises(DataError, match="class 0 has only 143"):
        per_class_subset(indices, labels, 200, seed=1)


def test_per_class_through_the_run_loaders(fashion_mnist):
    cfg = load_config("default", {"data.dataset": "fashion-mnist:classes=5-9", "data.per_class": 10})
    data = load_dataset(cfg.data.dataset)
    loaders = make_loaders(data, cfg, torch.device("cpu"))
    assert loaders.fit_targets.bincount().tolist() == [10] * 5
    val_images = loaders.val.images if hasattr(loaders.val, "images") else None
    assert val_images is None or len(val_images) == 5000  # held out before the subset is drawn
