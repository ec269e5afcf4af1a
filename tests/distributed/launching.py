"""What the distributed tests share: a tiny run's arguments, the commands that start one, two or more
processes, and the weights a run directory ends with."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import torch

from tests.tolerance import assert_float32_close
from trainlab.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
HOOK = Path(__file__).resolve().parent / "hook"  # sitecustomize.py: TRAINLAB_TEST_FAIL

# An MLP without batch norm or dropout (so that 1 and N processes compute the same function) on the
# generated 'mnist' of tests/conftest.py: 250 training images at a global batch of 10 = 25 steps an
# epoch, 50 in all; hflip, so that the augmentation of the global batch is part of what is compared.
# A mid-epoch resume point every 10 steps; validation (50 images) and test (100) in batches of 16.
RUN = [
    "--dataset", "mnist", "--model", "mlp", "--set", "model.widths=[32]", "--epochs", "2",
    "--batch-size", "10", "--set", "data.val_size=50", "--set", "data.eval_batch_size=16",
    "--optimizer", "sgd", "--lr", "0.05", "--augment", "hflip", "--set", "train.checkpoint_steps=10",
    "--device", "cpu", "--quiet",
]  # fmt: skip


NO_REPORT = types.SimpleNamespace(
    ReportInputs=lambda *args, **kwargs: None, write_report=lambda *args, **kwargs: None
)  # what hook/sitecustomize.py puts in place of trainlab.report.html


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(data_root: Path, fail: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TRAINLAB_DATA": str(data_root),
        "TRAINLAB_TEST_NO_REPORT": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HOOK)])
    env.pop("TRAINLAB_TEST_FAIL", None)
    if fail:
        env["TRAINLAB_TEST_FAIL"] = fail
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # never inherit a job's place
    return env


def trainlab(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`trainlab ARGS` (with --nproc N: the launcher over torchrun) in a fresh process."""
    command = [sys.executable, "-m", "trainlab", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def torchrun(options: list[str], *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.Popen:
    """torchrun OPTIONS -m trainlab ARGS, started (not waited for)."""
    command = [sys.executable, "-m", "torch.distributed.run", *options, "-m", "trainlab", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def record_model_inputs(path: Path, at_exit: bool = True):
    """From now on, every training step's input (after augmentation and this rank's rows, before the
    preprocessing) adds one row sum per image to what the returned save() writes to `path` (safetensors:
    rows (n,) float64 and the number of rows of each step, sizes (steps,)); at exit, or when called."""
    import atexit

    from safetensors.torch import save_file

    from trainlab.training.trainer import Trainer

    rows, sizes = [], []
    original = Trainer.model_input

    def recording(self, x):
        rows.append(x.double().flatten(1).sum(1))
        sizes.append(len(x))
        return original(self, x)

    def save() -> None:
        save_file({"rows": torch.cat(rows), "sizes": torch.tensor(sizes)}, str(path))

    Trainer.model_input = recording
    if at_exit:
        atexit.register(save)
    return save


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run_dir / "model.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def assert_same_training(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """The weights of RUN trained on another number of processes: within the issue's 1e-6, which is 8
    float32 eps at the unit scale of these weights (|w| < 1). Why that holds: a step's gradient on N
    ranks re-associates the sum over the batch of B = 10 per-sample gradients (at most B u sum |g|,
    Higham 2002, 3.1), and SGD scales it by lr = 0.05: at most 0.25 eps a step at |g| <= 1. The 50
    steps' errors add as a random walk (Higham & Mary 2019), about sqrt(50) * 0.25 = 1.8 eps; 8 eps is
    more than 4 of its standard deviations. A wrong shard (a sample twice, one left out) is off by
    orders of magnitude more."""
    assert want.keys() == got.keys()
    for key in want:
        assert_float32_close(got[key], want[key], ops=8, scale=1.0)


def succeeded(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
