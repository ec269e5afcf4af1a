"""A small source run shared by the transfer tests: SpeedNet (narrow) on 1,024 images of Fashion-MNIST
classes 0-4, one epoch. Built once per session; the tests never write into it."""

from __future__ import annotations

import pytest

from trainlab.config import load_config
from trainlab.run import train

SOURCE_KEYS = {
    "data.dataset": "fashion-mnist:classes=0-4",
    "data.limit_train": 1024,
    "data.val_size": 256,
    "data.batch_size": 64,
    "data.augment": "",
    "model.widths": [8, 16, 16],
    "train.epochs": 1,
    "train.tta": False,
}
# a target run on Fashion-MNIST classes 5-9, small enough for a test
TARGET_KEYS = {**SOURCE_KEYS, "data.dataset": "fashion-mnist:classes=5-9", "data.limit_train": 256}


@pytest.fixture(scope="session")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "run"
    train(load_config("cpu-fast", SOURCE_KEYS), out, progress=False)
    return out
