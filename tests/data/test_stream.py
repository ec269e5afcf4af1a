"""Image folders over the memory budget stream from disk with the same batches as in memory."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from trainlab.config import load_config
from trainlab.data.datasets import load_dataset
from trainlab.data.loader import DeviceLoader
from trainlab.data.stream import FileImages, StreamLoader
from trainlab.run import train


def make_folder(root, n_per_class=24):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, name in enumerate(["dark", "light"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n_per_class if split == "train" else 6):
                pixels = rng.integers(0, 60, (8, 8)) + 150 * k
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    root = make_folder(tmp_path / "folder")
    in_memory = load_dataset(f"folder:{root}")
    streamed = load_dataset(f"folder:{root}", memory_budget_mb=1e-6)
    assert isinstance(streamed.train_images, FileImages) and streamed.streamed and not in_memory.streamed
    indices = torch.arange(len(in_memory.train_labels))
    a = DeviceLoader(in_memory.train_images, in_memory.train_labels, 10, shuffle=True, seed=3)
    b = StreamLoader(
        streamed.train_images, streamed.train_labels, indices, 10, shuffle=True, seed=3, workers=1
    )
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_training_on_a_streamed_folder(tmp_path):
    root = make_folder(tmp_path / "folder")
    overrides = {
        "data.dataset": f"folder:{root}", "data.memory_budget_mb": 1e-6, "data.val_size": 8,
        "data.batch_size": 8, "data.workers": 0, "model.name": "mlp", "optim.name": "adam", "optim.lr": 0.01,
        "train.epochs": 3,
    }  # fmt: skip
    result = train(load_config("default", overrides), tmp_path / "run", progress=False)
    assert result.summary["test_accuracy"] == 1.0  # dark vs light is trivially separable
