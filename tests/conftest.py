"""Shared fixtures: real Fashion-MNIST (required: `make test` installs it) and small generated files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

from trainlab.training.trainer import Callback

# One intra-op thread: on a 2-core machine shared with anything else, two OpenMP threads spin at every
# barrier and small ops run tens of times slower (measured: 1.2 s vs 30 ms per SpeedNet step at batch 64).
torch.set_num_threads(1)

# The property tests draw the same examples on every run and machine ("ci", the default), so the suite
# passes or fails the same way everywhere; HYPOTHESIS_PROFILE=explore draws new ones to hunt for bugs.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write `array` (uint8) in idx format: magic 0x0000 08 ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_tiny_mnist(root: Path) -> Path:
    """A generated 'mnist' in `root`: 300 train / 100 test images whose class is written in the pixels
    (class k lights up row block k), so a model can learn it in a few steps."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for split, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 250
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch) -> Path:
    """write_tiny_mnist in a tmp dir, with TRAINLAB_DATA pointing at it."""
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "data"))
    return write_tiny_mnist(tmp_path / "data" / "mnist")


@pytest.fixture(scope="session")
def fashion_mnist():
    from trainlab.data.datasets import load_dataset

    return load_dataset("fashion-mnist")


@pytest.fixture
def force_accelerator_path(monkeypatch):
    """`force()` makes augmentations take their accelerator path on CPU tensors (transform every sample
    and keep the chosen ones with `where`: no host sync); it returns a list that counts the decisions."""
    from trainlab.data.augment import base

    def force() -> list[int]:
        calls = []

        def always(x):
            calls.append(1)
            return True

        monkeypatch.setattr(base, "avoid_host_sync", always)
        return calls

    return force


def image_folder(root, classes=("dark", "light"), splits=("train", "test"), per_class=6):
    """root/<split>/<class>/<i>.png, 8x8 grey; the classes differ in brightness."""
    rng = np.random.default_rng(0)
    for split in splits:
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                Image.fromarray((rng.integers(0, 60, (8, 8)) + 150 * k).astype(np.uint8)).save(
                    folder / f"{i}.png"
                )
    return root


class Interrupted(Exception):
    """What StopAt raises: a run stopped mid-epoch, as a crash would stop it (after its checkpoints)."""


class StopAt(Callback):
    """Interrupt a run after its global step `step`, to test resuming from there."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, step, loss):
        if trainer.global_step == self.step:
            raise Interrupted


def shared_fixture(item) -> str | None:
    """The first module- or session-scoped fixture of `item` defined in a test directory's file (not the
    root conftest, whose shared fixtures are cheap), as "path::name"; None if it uses none."""
    root = Path(__file__).parent
    for name in item._fixtureinfo.names_closure:
        for fixture in item._fixtureinfo.name2fixturedefs.get(name, ()):
            defined_in = Path(fixture.func.__code__.co_filename)
            if fixture.scope in ("module", "session") and defined_in.is_relative_to(root):
                if defined_in != root / "conftest.py":
                    return f"{defined_in.relative_to(root)}::{name}"
    return None


def pytest_collection_modifyitems(items):
    """Under `pytest -n 2 --dist loadgroup` (make test), the tests that share an expensive fixture
    (trained runs) go to one worker: each worker builds such a fixture for itself, so tests spread over
    both would build it twice. A test that names its own group (tests/experiments: one per experiment)
    keeps it."""
    for item in items:
        if item.get_closest_marker("xdist_group") or not hasattr(item, "_fixtureinfo"):
            continue
        group = shared_fixture(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
