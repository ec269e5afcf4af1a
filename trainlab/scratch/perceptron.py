"""The neuron of the first lecture: Rosenblatt's perceptron and its soft (logistic) version.

Perceptron (Rosenblatt 1958): z = sum_i w_i x_i - T, output y = step(z) = 1 if z >= 0 else 0. The
learning rule, after each example with target t: w += lr (t - y) x and T -= lr (t - y); nothing changes
when the output is right. On linearly separable data it stops making mistakes after finitely many
updates (Novikoff 1962); on XOR, which no line separates, some example is wrong in every epoch (Minsky &
Papert 1969). The rule updates after every example, so `fit` loops over them in order.

LogisticUnit, the soft perceptron: y = sigma(w . x + b), trained by full-batch gradient descent on the
cross-entropy -t log y - (1 - t) log(1 - y), whose gradient by z is y - t, as for the perceptron rule.
"""

from __future__ import annotations

import numpy as np

from trainlab.errors import TrainlabError
from trainlab.nn.activation_formulas import sigmoid
from trainlab.scratch.losses import sigmoid_cross_entropy


def check_binary(X: np.ndarray, y: np.ndarray) -> None:
    if X.ndim != 2 or len(X) != len(y):
        raise TrainlabError(
            f"X of shape {X.shape} and y of shape {y.shape} do not match (expected (N, D), (N,))"
        )
    if not np.isin(y, (0, 1)).all():
        raise TrainlabError("perceptron targets must be 0 or 1")


class Perceptron:
    """z = w . x - T with step output; w and T start at 0."""

    def __init__(self, num_inputs: int, lr: float = 1.0):
        self.w = np.zeros(num_inputs)
        self.T = 0.0
        self.lr = lr

    def net_input(self, X: np.ndarray) -> np.ndarray:
        return X @ self.w - self.T

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.net_input(X) >= 0).astype(np.int64)

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int) -> list[int]:
        """The perceptron rule, example by example in the given order; returns the number of misclassified
        examples in each epoch (0 from the epoch it has converged on)."""
        check_binary(X, y)
        errors = []
        for _ in range(epochs):
            wrong = 0
            for x, t in zip(X, y):
                delta = t - int(x @ self.w - self.T >= 0)
                if delta:
                    self.w += self.lr * delta * x
                    self.T -= self.lr * delta
                    wrong += 1
            errors.append(wrong)
        return errors


class LogisticUnit:
    """y = sigma(w . x + b); w and b start at 0."""

    def __init__(self, num_inputs: int, lr: float = 0.5):
        self.w = np.zeros(num_inputs)
        self.b = 0.0
        self.lr = lr

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(X @ self.w + self.b)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (X @ self.w + self.b >= 0).astype(np.int64)

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int) -> list[float]:
        """Full-batch gradient descent; returns the mean cross-entropy before each step."""
        check_binary(X, y)
        losses = []
        for _ in range(epochs):
            loss, dz = sigmoid_cross_entropy(X @ self.w + self.b, y)  # dz = (y_hat - t) / N
            self.w -= self.lr * (X.T @ dz)
            self.b -= self.lr * float(dz.sum())
            losses.append(loss)
        return losses
