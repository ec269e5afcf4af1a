"""Minibatch training of a NumPy model: `history = fit(model, SGD(model.params, 0.1), X, y, epochs=10)`.

The batch order is seeded: one rng = np.random.default_rng(seed) draws rng.permutation(len(X)) at the
start of every epoch, and the batches are its consecutive slices of `batch_size` (the last one smaller
when batch_size does not divide len(X)). The same seed therefore gives the same batches, which is how the
tests replay them into torch. Training runs in the data's dtype: a model of another dtype is cast to it
before the first step (float32 data, float32 arithmetic); the optimiser sees the cast arrays because it
holds the model's params dict, which the cast refills. Each step is one batched forward and backward;
there is no Python loop over examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from trainlab.errors import TrainlabError
from trainlab.scratch.losses import decode
from trainlab.scratch.model import Sequential
from trainlab.scratch.optim import Optimizer


def evaluate(model: Sequential, X: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """Eval-mode loss (with the penalty) and, for integer labels, accuracy, in batches of `batch_size`."""
    total, correct = 0.0, 0
    for start in range(0, len(X), batch_size):
        xb, yb = X[start : start + batch_size], y[start : start + batch_size]
        scores = model.forward(xb, train=False)
        total += model.loss(scores, yb)[0] * len(xb)
        if np.issubdtype(y.dtype, np.integer):
            correct += int(np.sum(decode(model.loss_spec, scores) == yb))
    penalty = model.penalty(model.params)[0] if model.penalty is not None else 0.0
    metrics = {"loss": total / len(X) + penalty}
    if np.issubdtype(y.dtype, np.integer):
        metrics["accuracy"] = correct / len(X)
    return metrics


def fit(
    model: Sequential,
    optimizer: Optimizer,
    X: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train for `epochs`; returns one dict per epoch: epoch, train_loss (the mean of its batches' losses,
    weighted by batch size), seconds, images_per_s, and val_loss / val_accuracy when X_val is given.
    `on_epoch(row)` is called after each epoch."""
    if len(X) != len(y):
        raise TrainlabError(f"X has {len(X)} examples but y has {len(y)}")
    if batch_size < 1 or epochs < 0:
        raise TrainlabError(
            f"batch_size={batch_size} and epochs={epochs} are not valid (expected >= 1, >= 0)"
        )
    if model.params and model.dtype != X.dtype:
        if optimizer.params is not model.params:
            raise TrainlabError(
                f"the model is {model.dtype} but the data {X.dtype}, and the optimizer does "
                "not hold model.params to follow a cast: build the model in the data's dtype"
            )
        model.astype(X.dtype)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(len(X))
        total = 0.0
        for begin in range(0, len(X), batch_size):
            batch = order[begin : begin + batch_size]
            loss, grads = model.gradients(X[batch], y[batch])
            optimizer.step(grads)
            total += loss * len(batch)
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch,
            "train_loss": total / len(X),
            "seconds": seconds,
            "images_per_s": len(X) / seconds,
        }
        if X_val is not None and y_val is not None:
            row.update({f"val_{k}": v for k, v in evaluate(model, X_val, y_val).items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return history
