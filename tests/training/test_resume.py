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


def trainlab_cli(*args):
    return [sys.executable, "-m", "trainlab.cli", *args]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(
        trainlab_cli("train", *ARGS, "--out", str(reference)), check=True, env=env, capture_output=True
    )

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        trainlab_cli("train", *ARGS, "--out", str(killed)), env=env, stderr=subprocess.DEVNULL
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
        trainlab_cli("train", "--resume", str(killed), "--quiet"), env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    want, _ = load_checkpoint(reference / "model.safetensors")
    got, _ = load_checkpoint(killed / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert (killed / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs, none twice


KILL_AT = """
import os, signal, sys
import trainlab
from trainlab.training.callbacks import Callback

class KillAt(Callback):
    def on_train_batch_end(self, trainer, step, loss):
        if trainer.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

cfg = trainlab.load_config("default", {overrides!r})
trainlab.train(cfg, sys.argv[1], callbacks=[KillAt()], progress=False)
"""

# 2048 images in batches of 128: 16 steps an epoch. Early stopping with min_delta 0.5 can never see an
# improvement after epoch 1, so on any machine it stops after epoch 2 and restores epoch 1's weights.
STOPPING = {
    "train.device": "cpu", "data.limit_train": 2048, "data.val_size": 512, "data.batch_size": 128,
    "model.widths": [8, 8, 16], "model.dropout": 0.1, "data.augment": "hflip,mixup=0.2",
    "train.epochs": 4, "train.early_stopping": 1, "train.min_delta": 0.5, "train.restore_best": True,
    "train.ema": 0.9, "train.tta": True, "train.checkpoint_steps": 5,
}  # fmt: skip
TIMING = ("seconds", "time_to_result_seconds", "load_seconds", "compile_seconds", "init_seconds",
          "eval_seconds", "setup_seconds", "total_seconds", "train_seconds")  # fmt: skip


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_sigkill_between_mid_epoch_resume_points_with_early_stopping_ema_and_mixup_is_bit_exact(tmp_path):
    """Killed at step 28 (epoch 2, step 12 of 16), the run resumes from the resume point at step 25 and
    ends exactly as the run that was never killed: the same restored-best EMA weights, summary and
    per-epoch metrics. Early stopping's best weights travel in the checkpoint as its own state."""
    import json

    import trainlab

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = trainlab.train(
        trainlab.load_config("default", STOPPING), tmp_path / "reference", progress=False
    )
    assert reference.summary["epochs_run"] == 2  # stopped early: epoch 2 did not improve by 0.5

    killed = tmp_path / "killed"
    script = KILL_AT.format(step=28, overrides=STOPPING)
    process = subprocess.run([sys.executable, "-c", script, str(killed)], env=env, capture_output=True)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-2000:]
    _, meta = load_checkpoint(killed / "checkpoints" / "last.safetensors")
    assert meta["global_step"] == 25 and meta["epoch"] == 1 and meta["progress"]["step"] == 9
    assert meta["callbacks"]["EarlyStopping"]["best_state"]  # epoch 1's weights, in the checkpoint

    resumed = subprocess.run(
        trainlab_cli("train", "--resume", str(killed), "--quiet"), env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    want, _ = load_checkpoint(tmp_path / "reference" / "model.safetensors")
    got, _ = load_checkpoint(killed / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "reference", killed)]
    assert without_timing([summaries[0]]) == without_timing([summaries[1]])
    histories = [
        load_checkpoint(d / "checkpoints" / "last.safetensors")[1]["history"]
        for d in (tmp_path / "reference", killed)
    ]
    assert without_timing(histories[0]) == without_timing(histories[1])
