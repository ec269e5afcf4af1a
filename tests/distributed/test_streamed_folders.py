"""A streamed image folder shards across ranks: each rank decodes only its rows of each global training
batch (and its block of evaluation batches), and the ranks together yield what one process yields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import image_folder
from tests.distributed.launching import ROOT, environment, free_port
from trainlab.data.stream import FileImages, StreamLoader
from trainlab.inference import Predictor
from trainlab.tasks.base import create_task

BATCH = 6


def stream_loaders(root: str) -> tuple[StreamLoader, StreamLoader]:
    """(shuffled training loader of global batch 6, evaluation loader of batch 1) over the 8x8 PNGs
    of `root`'s train/ and test/ splits, decoded in the main process (workers=0)."""
    loaders = []
    for split, batch in (("train", BATCH), ("test", 1)):
        files = sorted(Path(root, split).rglob("*.png"))
        labels = torch.tensor([0 if f.parent.name == "dark" else 1 for f in files])
        images = FileImages(files, 1, (8, 8))
        shuffle = split == "train"
        loaders.append(
            StreamLoader(
                images, labels, torch.arange(len(files)), batch, shuffle=shuffle, drop_last=shuffle, workers=0
            )
        )
    return loaders[0], loaders[1]


def test_streamed_folder_batches_are_those_of_one_process_and_decoded_once(tmp_path):
    root = image_folder(tmp_path / "folder", classes=("dark", "light"), per_class=9)  # 18 train, 4 test
    train, test = stream_loaders(str(root))
    want = [(images, labels) for images, labels in train]
    outputs, targets = Predictor(torch.nn.Flatten(), create_task("classification")).run(test)
    out = tmp_path / "streamed.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
        f"--master-port={free_port()}", str(Path(__file__).parent / "stream_worker.py"), str(root), str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=environment(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(out)
    assert torch.equal(got["train_images"], torch.cat([b[0] for b in want]))
    assert torch.equal(got["train_labels"], torch.cat([b[1] for b in want]))
    assert torch.equal(got["test_outputs"], outputs) and torch.equal(got["test_targets"], targets)
    # each rank: its 3 of each of the 3 training batches of 6, and its block of 2 of the 4 test batches
    assert got["per_rank"].tolist() == [9 + 2, 9 + 2]
