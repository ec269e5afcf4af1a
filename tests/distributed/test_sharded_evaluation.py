"""Evaluation sharded across ranks, with no padding and no dropped samples, equals the single-process
evaluation exactly: the same outputs bit for bit, hence the same loss, accuracy and confusion matrix,
for a set of 10,001 images that neither 2 nor 3 ranks divide (nor the evaluation batch of 1,000)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.launching import ROOT, environment, free_port
from trainlab.data.loader import DeviceLoader
from trainlab.inference import Predictor, evaluate_outputs
from trainlab.models import create_model
from trainlab.tasks.base import create_task

IMAGES, EVAL_BATCH = 10_001, 1000  # 11 batches, the last of one image


def eval_split() -> tuple[Predictor, DeviceLoader]:
    """A small CNN with batch norm (eval mode: running statistics) and its seeded test split, built the
    same way in every process."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (IMAGES, 1, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (IMAGES,), generator=g)
    torch.manual_seed(0)
    model = create_model("cnn", in_channels=1, num_classes=10, widths=[4, 8, 8], norm="batch")
    for m in model.modules():  # running statistics other than the initial 0 and 1
        if hasattr(m, "running_mean"):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return Predictor(model, create_task("classification")), DeviceLoader(images, labels, EVAL_BATCH)


# world 3 (a world that does not divide the batches) runs with -m slow: CI's whole suite must stay under
# 10 minutes on 2 cores, and world 2 launches the same code path
@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_sharded_evaluation_equals_one_process_exactly(world, tmp_path):
    predictor, loader = eval_split()
    want_outputs, want_targets = predictor.run(loader)
    out = tmp_path / "gathered.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={world}", "--master-addr=127.0.0.1",
        f"--master-port={free_port()}", str(Path(__file__).parent / "eval_worker.py"), str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=environment(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(out)
    per_rank = got["per_rank"].tolist()  # images through the model on each rank: each once
    assert len(per_rank) == world and min(per_rank) > 0 and sum(per_rank) == IMAGES
    assert got["outputs"].shape == want_outputs.shape == (IMAGES, 10)  # nothing padded, nothing dropped
    assert torch.equal(got["targets"], want_targets)
    assert torch.equal(got["outputs"], want_outputs)
    classes = [str(k) for k in range(10)]
    task = predictor.task
    assert evaluate_outputs(task, got["outputs"], got["targets"], classes) == evaluate_outputs(
        task, want_outputs, want_targets, classes
    )
