"""A run killed with SIGKILL mid-epoch resumes and reaches bit-identical weights on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from trainlab.training.checkpoint import load_checkpoint

ARGS = [
    "--model", "cnn", "--set", "model.widths=[8,8,16]", "--epochs", "3", "--limit-train", "2000",
    "--set", "data.val_size=500", "--augment", "hflip", "--set", "model.dropout=0.1",
    "--device", "cpu", "--quiet",
]  # fmt: skip


def trainlab(*args):
    return [sys.executable, "-m", "trainlab.cli", *args]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(
        trainlab("train", *ARGS, "--out", str(reference)), check=True, env=env, capture_output=True
    )

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        trainlab("train", *ARGS, "--out", str(killed)), env=env, stderr=subprocess.DEVNULL
    )
    last = killed / "checkpoints" / "last.safetensors"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)  # into epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    _, meta = load_checkpoint(last)
    assert meta["epoch"] < 3

    resumed = subprocess.run(
        trainlab("train", "--resume", str(killed), "--quiet"), env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    want, _ = load_checkpoint(reference / "model.safetensors")
    got, _ = load_checkpoint(killed / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert (killed / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs, none twice
