"""Gradient checking: backprop's analytic gradient against centred differences, in float64.

    gradient_check(model, X, y)   -> {"0.W": 3e-10, "0.b": 2e-11, ...}
    gradient_check(layer, X)      -> {"W": ..., "b": ..., "x": ...}

The numerical derivative of a scalar loss L by one entry w is (L(w + eps) - L(w - eps)) / (2 eps), with
error O(eps^2) from truncation and about 1e-16 |L| / eps from rounding, so it runs on a float64 copy (the
model or layer passed in is not changed). For a model, L is its loss with the penalty, on the batch
(X, y), in train mode (or eval mode with train=False); for a layer, L = sum(out * R) with R fixed
standard normal weights, so dL/d out = R, and its input is checked too, as "x".

The relative error of a parameter is max |a - n| / max(1e-8, max |a| + max |n|) over its entries (a
analytic, n numerical): the largest difference relative to the gradient's scale (cs231n's rel_error
with the maxima taken over the whole array, so an entry whose gradient is at the rounding floor of the
others does not dominate). About 1e-7 or less means the backward is right; 1e-2 or more is a bug.

Layers that draw random numbers (dropout) draw from their `rng`; its state is restored before every
evaluation, so each one sees the same mask. Inputs must stay away from kinks (ReLU at 0, ties in a max):
within eps of one, the one-sided slopes differ and no backward can match the difference quotient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from trainlab.errors import TrainlabError
from trainlab.scratch.layers import Layer
from trainlab.scratch.model import Sequential


def relative_error(analytic: np.ndarray, numerical: np.ndarray) -> float:
    scale = np.max(np.abs(analytic)) + np.max(np.abs(numerical))
    return float(np.max(np.abs(analytic - numerical)) / max(1e-8, scale))


def generators(layers: list[Any]) -> list[np.random.Generator]:
    found = {
        id(g): g for layer in layers if isinstance(g := getattr(layer, "rng", None), np.random.Generator)
    }
    return list(found.values())


def numerical_gradient(
    loss: Callable[[], float], array: np.ndarray, eps: float, entries: np.ndarray
) -> np.ndarray:
    """Centred differences of loss() by each of `entries` (flat indices) of `array`, changed in place."""
    grad = np.zeros(len(entries))
    for j, flat_index in enumerate(entries):
        i = np.unravel_index(flat_index, array.shape)
        old = array[i]
        array[i] = old + eps
        plus = loss()
        array[i] = old - eps
        minus = loss()
        array[i] = old
        grad[j] = (plus - minus) / (2 * eps)
    return grad


def gradient_check(
    model_or_layer: Sequential | Layer,
    X: np.ndarray,
    y: np.ndarray | None = None,
    eps: float = 1e-6,
    train: bool = True,
    samples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The relative error of each parameter's gradient (and of "x" for a layer). `samples` checks that
    many random entries of each array instead of all of them (each entry costs two forward passes);
    `seed` draws them and a layer's R."""
    target = copy.deepcopy(model_or_layer).astype(np.float64)
    X = np.array(X, dtype=np.float64)
    pick = np.random.default_rng(seed)
    is_model = isinstance(target, Sequential)
    layers = target.layers if is_model else [target]
    rngs = generators(layers)
    states = [g.bit_generator.state for g in rngs]

    def replay() -> None:
        for g, state in zip(rngs, states):
            g.bit_generator.state = state

    if is_model:
        if y is None:
            raise TrainlabError("gradient_check of a model needs labels y")

        def loss() -> float:
            replay()
            return target.loss_value(X, y, train)

        replay()
        _, analytic = target.gradients(X, y, train=train)
        arrays = dict(target.params)
    else:
        replay()
        weights = pick.standard_normal(target.forward(X, train).shape)

        def loss() -> float:
            replay()
            return float(np.sum(target.forward(X, train) * weights))

        replay()
        target.forward(X, train)
        dx = target.backward(weights)
        analytic = {**target.grads, "x": dx}
        arrays = {**target.params, "x": X}

    errors = {}
    for name, array in arrays.items():
        entries = np.arange(array.size)
        if samples is not None and samples < array.size:
            entries = pick.choice(array.size, samples, replace=False)
        numerical = numerical_gradient(loss, array, eps, entries)
        errors[name] = relative_error(np.asarray(analytic[name]).reshape(-1)[entries], numerical)
    return errors
