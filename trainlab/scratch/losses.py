"""Losses and weight penalties of the NumPy engine: each returns the value and its gradient.

Losses take the scores f (N, C) of a batch and its labels, and return (loss, dL/df):

    softmax_cross_entropy   L = 1/N sum_i -log(e^{f_{y_i}} / sum_j e^{f_j});  dL/df = (softmax(f) - 1_y) / N
    multiclass_svm          L = 1/N sum_i sum_{j != y_i} max(0, f_j - f_{y_i} + margin)   (the decks' hinge)
    sigmoid_cross_entropy   L = 1/N sum_i log(1 + e^{f_i}) - y_i f_i, one score per example, y in {0, 1}
    mse                     L = mean (pred - target)^2 over every element, as torch's MSELoss

Penalties R(W), as the lectures and trainlab.nn.regularize write them, apply to weights only (parameters
named "W", or "<layer>.W" in a model), not to biases or batch norm's gamma and beta; each returns
(strength * R, {name: gradient}):

    l2            R(W) = sum W^2                (gradient 2W: weight decay under SGD)
    l1            R(W) = sum |W|                (gradient sign(W), 0 at 0)
    elastic_net   R(W) = sum l1_ratio |W| + (1 - l1_ratio) W^2   (Zou & Hastie 2005; trainlab.nn's
                  elastic_net, sum beta W^2 + |W| at strength s, is l1_ratio = 1 / (1 + beta) at
                  strength s (1 + beta))

The decks' full SVM objective L = data loss + lambda R(W) is a model with loss="multiclass_svm" and
penalty=create_penalty("l2", lambda).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from trainlab.errors import ConfigError, TrainlabError
from trainlab.nn.activation_formulas import sigmoid
from trainlab.registry import Registry, suggest

LOSSES = Registry("loss")
PENALTIES = Registry("penalty")

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]
PenaltyFn = Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]]


def check_labels(scores: np.ndarray, y: np.ndarray) -> None:
    if scores.ndim != 2 or len(y) != len(scores):
        raise TrainlabError(
            f"scores of shape {scores.shape} and labels of shape {y.shape} do not match "
            "(expected scores (N, C) and labels (N,))"
        )


@LOSSES.register("softmax_cross_entropy", aliases=("cross_entropy", "softmax"), decode="argmax")
def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    check_labels(scores, y)
    n, rows = len(scores), np.arange(len(scores))
    shifted = scores - scores.max(1, keepdims=True)  # the same softmax, without overflow
    exp = np.exp(shifted)
    total = exp.sum(1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))
    dscores = exp / total  # softmax(f)
    dscores[rows, y] -= 1
    dscores /= n
    return loss, dscores


@LOSSES.register("multiclass_svm", aliases=("svm", "hinge"), decode="argmax")
def multiclass_svm(scores: np.ndarray, y: np.ndarray, margin: float = 1.0) -> tuple[float, np.ndarray]:
    """Every wrong class j scoring within `margin` of the right one adds f_j - f_{y_i} + margin; its
    gradient is +1 on f_j and -1 on f_{y_i} for each such j (a subgradient at the kink, taken as 0)."""
    check_labels(scores, y)
    n, rows = len(scores), np.arange(len(scores))
    margins = scores - scores[rows, y][:, None] + margin
    margins[rows, y] = 0
    active = margins > 0
    loss = float(np.sum(margins, where=active) / n)
    dscores = active.astype(scores.dtype)
    dscores[rows, y] = -active.sum(1)
    dscores /= n
    return loss, dscores


@LOSSES.register("sigmoid_cross_entropy", aliases=("binary_cross_entropy", "logistic"), decode="positive")
def sigmoid_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The soft perceptron's loss: -y log sigma(f) - (1 - y) log(1 - sigma(f)) = log(1 + e^f) - y f, with
    gradient sigma(f) - y. Scores (N,) or (N, 1)."""
    f = scores.reshape(len(scores))
    if len(y) != len(f):
        raise TrainlabError(
            f"scores of shape {scores.shape} and labels of shape {y.shape} do not match "
            "(expected one score per label)"
        )
    target = y.astype(scores.dtype)
    loss = float(np.mean(np.logaddexp(0.0, f) - target * f))
    return loss, ((sigmoid(f) - target) / len(f)).reshape(scores.shape)


@LOSSES.register("mse", aliases=("l2_loss", "mean_squared_error"), decode="identity")
def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    if pred.shape != target.shape:
        raise TrainlabError(f"prediction of shape {pred.shape} and target of shape {target.shape} differ")
    diff = pred - target
    return float(np.mean(np.square(diff))), diff * (2.0 / diff.size)


def create_loss(loss: str | LossFn) -> LossFn:
    """A loss by name (ConfigError listing the valid ones if unknown), or the callable itself."""
    return loss if callable(loss) else LOSSES.get(loss)


def decode(loss: str | LossFn, scores: np.ndarray) -> np.ndarray:
    """Predictions from scores: the class with the highest score, f > 0 for one logistic score, or the
    output itself for regression (a callable loss: the class with the highest score)."""
    rule = LOSSES.meta(loss)["decode"] if isinstance(loss, str) else "argmax"
    if rule == "argmax":
        return scores.argmax(1)
    if rule == "positive":
        return (scores.reshape(len(scores)) > 0).astype(np.int64)
    return scores


def is_weight(name: str) -> bool:
    """Weights are the parameters named W; biases, PReLU slopes and batch norm's gamma, beta are not."""
    return name == "W" or name.endswith(".W")


def weights(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: p for name, p in params.items() if is_weight(name)}


@PENALTIES.register("l2")
def l2(params: dict[str, np.ndarray], strength: float) -> tuple[float, dict[str, np.ndarray]]:
    w = weights(params)
    return strength * sum(float(np.sum(np.square(p))) for p in w.values()), {
        name: (2.0 * strength) * p for name, p in w.items()
    }


@PENALTIES.register("l1")
def l1(params: dict[str, np.ndarray], strength: float) -> tuple[float, dict[str, np.ndarray]]:
    w = weights(params)
    return strength * sum(float(np.sum(np.abs(p))) for p in w.values()), {
        name: strength * np.sign(p) for name, p in w.items()
    }


@PENALTIES.register("elastic_net", aliases=("l1_l2",))
def elastic_net(
    params: dict[str, np.ndarray], strength: float, l1_ratio: float = 0.5
) -> tuple[float, dict[str, np.ndarray]]:
    if not 0 <= l1_ratio <= 1:
        raise ConfigError(f"elastic_net l1_ratio={l1_ratio} is not valid (expected 0 <= l1_ratio <= 1)")
    value1, grads1 = l1(params, strength * l1_ratio)
    value2, grads2 = l2(params, strength * (1 - l1_ratio))
    return value1 + value2, {name: grads1[name] + grads2[name] for name in grads1}


def create_penalty(name: str, strength: float, **options: Any) -> PenaltyFn:
    """`penalty(params) -> (value, grads)` for a model's `penalty=`: create_penalty("l2", 1e-3)."""
    if strength < 0:
        raise ConfigError(f"penalty strength={strength} is not valid (expected >= 0)")
    fn = PENALTIES.get(name)
    accepted = list(inspect.signature(fn).parameters)[2:]  # after params and strength
    for key in options:
        if key not in accepted:
            raise ConfigError(suggest(key, accepted, f"option for penalty {name!r}:"))
    return functools.partial(fn, strength=strength, **options)


def list_losses() -> list[str]:
    return LOSSES.list()
