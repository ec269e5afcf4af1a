"""Training throughput of the NumPy engine (trainlab.scratch) against PyTorch on the same thread count.

Two models, each trained by both on the same Fashion-MNIST images (channel_mean_std, float32), in the
same batch order, with plain SGD (lr 0.01) and softmax cross-entropy:

- the MLP 784-256-128-10 (ReLU) at batch 128; the goal is scratch >= 0.8x torch (issue 13);
- LeNet-5 (tanh, average pooling, as trainlab.models.lenet5 builds it) at batch 128.

A round times one epoch of each, scratch then torch, so background load on a shared machine hits both
alike; after one warm-up round, the ratio reported is the median over rounds of each round's
scratch / torch images/s, with the rounds' range. Images/s per core is images/s divided by the thread
count. Torch is torch.nn + torch.optim.SGD in the usual loop (zero_grad, backward, step).

Threads: NumPy's BLAS (OpenBLAS) reads OPENBLAS_NUM_THREADS / OMP_NUM_THREADS when it is loaded, so
this script sets them before importing NumPy (threadpoolctl is not a dependency), and torch gets
torch.set_num_threads with the same number.

    .venv/bin/python bench/scratch_speed.py [--threads N] [--images 12800] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS and torch threads")
    parser.add_argument("--images", type=int, default=12800, help="MLP images per epoch (LeNet-5: 1/4)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up")
    parser.add_argument("--batch", type=int, default=128)
    return parser.parse_args()


ARGS = parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # read when the BLAS library loads: before numpy is imported

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from trainlab.models import create_model  # noqa: E402
from trainlab.scratch import MLP, SGD, fit, lenet5  # noqa: E402
from trainlab.scratch_run import ScratchSettings, load_arrays  # noqa: E402

LR = 0.01


def torch_mlp(scratch) -> nn.Module:
    """784-256-128-10 with the scratch model's initial weights (W is (fan_in, fan_out): transpose)."""
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    with torch.no_grad():
        for layer, i in zip([model[1], model[3], model[5]], (0, 2, 4)):
            layer.weight.copy_(torch.from_numpy(scratch.params[f"{i}.W"].T.copy()))
            layer.bias.copy_(torch.from_numpy(scratch.params[f"{i}.b"]))
    return model


def scratch_epoch(model, X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Seconds of one epoch of `fit` (its batch order: np.random.default_rng(seed).permutation)."""
    start = time.perf_counter()
    fit(model, SGD(model.params, lr=LR), X, y, epochs=1, batch_size=ARGS.batch, seed=seed)
    return time.perf_counter() - start


def torch_epoch(model: nn.Module, X: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """Seconds of one epoch in the same batch order as scratch_epoch."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(X)))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    for begin in range(0, len(X), ARGS.batch):
        batch = order[begin : begin + ARGS.batch]
        loss = F.cross_entropy(model(X[batch]), y[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def compare(name: str, scratch, torch_model: nn.Module, X: np.ndarray, y: np.ndarray) -> dict:
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    ratios, rates = [], {"scratch": [], "torch": []}
    for round_ in range(ARGS.rounds + 1):
        s = scratch_epoch(scratch, X, y, seed=round_)
        t = torch_epoch(torch_model, Xt, yt, seed=round_)
        if round_ == 0:
            continue  # warm-up: allocations, BLAS thread start-up
        rates["scratch"].append(len(X) / s)
        rates["torch"].append(len(X) / t)
        ratios.append(t / s)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    row = {"model": name, "images": len(X), **med, "ratio": float(np.median(ratios)),
           "ratio_min": min(ratios), "ratio_max": max(ratios)}  # fmt: skip
    print(
        f"{name:<16} scratch {med['scratch']:8.0f} images/s ({med['scratch'] / ARGS.threads:7.0f}/core)  "
        f"torch {med['torch']:8.0f} images/s ({med['torch'] / ARGS.threads:7.0f}/core)  "
        f"scratch/torch {row['ratio']:.2f} (rounds {row['ratio_min']:.2f}-{row['ratio_max']:.2f})",
        flush=True,
    )
    return row


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    splits = load_arrays(ScratchSettings(limit_train=ARGS.images, val_size=0).resolved())
    X, y = splits.x_train, splits.y_train
    load = os.getloadavg()[0]
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, {ARGS.threads} thread(s) "
        f"(OPENBLAS_NUM_THREADS and torch.set_num_threads), load average {load:.1f}; numpy {np.__version__}, "
        f"torch {torch.__version__}, Python {sys.version.split()[0]}; batch {ARGS.batch}, float32, SGD",
        flush=True,
    )
    mlp = MLP([784, 256, 128, 10], act="relu", seed=0)
    compare("MLP 784-256-128", mlp, torch_mlp(mlp), X, y)
    quarter = len(X) // 4
    compare("LeNet-5", lenet5(seed=0), create_model("lenet5"), X[:quarter], y[:quarter])
    print(
        f"load average at the end {os.getloadavg()[0]:.1f} (above {os.cpu_count()}: the machine was shared)"
    )


if __name__ == "__main__":
    main()
