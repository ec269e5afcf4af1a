"""Every registered activation and its closed-form derivative on NumPy arrays, without torch.

`FORMULAS.get(name)` is a `Formula(forward, derivative)`: two functions of (x, **options) that return an
array of x's shape and dtype. The torch activations in trainlab.nn.activations hand NumPy input to these
(`derivative`), and the NumPy engine trainlab.scratch builds its layers from them, so each closed form is
written once and importing it does not import torch. tests/scratch/test_against_torch.py checks every
formula against the torch module of the same name, values and derivatives, in float64.

Options are keyword arguments named like the torch modules' attributes (slope, alpha, beta, approximate).
Python floats for constants keep float32 input in float32 (NumPy 2 treats them as weak scalars).
Maxout takes its k pieces stacked on `axis` (default 0) and is not elementwise: d max / d piece is 1 for
the winning piece and 0 for the others (the first one on a tie, as argmax picks it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainlab.errors import ConfigError
from trainlab.registry import Registry

FORMULAS = Registry("activation")


@dataclass(frozen=True)
class Formula:
    forward: Callable[..., np.ndarray]
    derivative: Callable[..., np.ndarray]

    @property
    def options(self) -> tuple[str, ...]:
        """The names of the options it takes after the input: ("slope",) for leaky_relu."""
        return tuple(inspect.signature(self.forward).parameters)[1:]


def register(name: str, forward: Callable, derivative: Callable) -> None:
    FORMULAS.register(name)(Formula(forward, derivative))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), from e^-|x| so that neither tail overflows nor loses its relative precision."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def sigmoid_grad(x: np.ndarray) -> np.ndarray:
    s = sigmoid(x)
    return s * (1.0 - s)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_grad(x: np.ndarray) -> np.ndarray:
    return 1.0 - np.square(np.tanh(x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def relu_grad(x: np.ndarray) -> np.ndarray:
    """0 at x = 0, as autograd takes it."""
    return (x > 0).astype(x.dtype)


def leaky_relu(x: np.ndarray, slope: float = 0.01) -> np.ndarray:
    return np.where(x > 0, x, slope * x)


def leaky_relu_grad(x: np.ndarray, slope: float = 0.01) -> np.ndarray:
    return np.where(x > 0, 1.0, slope).astype(x.dtype, copy=False)


def per_channel(slope: np.ndarray | float, x: np.ndarray) -> np.ndarray | float:
    """A (C,) slope shaped (C, 1, ..., 1) against x's channel axis 1, as torch's PReLU applies it."""
    slope = np.asarray(slope, dtype=x.dtype)
    return slope.reshape(-1, *([1] * (x.ndim - 2))) if x.ndim > 1 else slope


def prelu(x: np.ndarray, slope: np.ndarray | float = 0.25) -> np.ndarray:
    """leaky_relu with a learned slope a: one shared (shape (1,)) or one per channel (shape (C,))."""
    return np.where(x > 0, x, per_channel(slope, x) * x)


def prelu_grad(x: np.ndarray, slope: np.ndarray | float = 0.25) -> np.ndarray:
    return np.where(x > 0, 1.0, per_channel(slope, x)).astype(x.dtype, copy=False)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_grad(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0))).astype(x.dtype, copy=False)


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def relu6_grad(x: np.ndarray) -> np.ndarray:
    return ((x > 0) & (x < 6)).astype(x.dtype)


def swish(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    return x * sigmoid(beta * x)


def swish_grad(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    s = sigmoid(beta * x)
    return s + beta * x * s * (1.0 - s)


def silu(x: np.ndarray) -> np.ndarray:
    return swish(x)


def silu_grad(x: np.ndarray) -> np.ndarray:
    return swish_grad(x)


def softplus(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """log(1 + e^(beta x)) / beta, exact in both tails (torch switches to x above beta x = 20)."""
    return np.logaddexp(0.0, beta * x) / beta


def softplus_grad(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    return sigmoid(beta * x)


def mish(x: np.ndarray) -> np.ndarray:
    return x * np.tanh(softplus(x))


def mish_grad(x: np.ndarray) -> np.ndarray:
    t = np.tanh(softplus(x))
    return t + x * (1.0 - np.square(t)) * sigmoid(x)


SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2 in x's dtype. NumPy has no erf: math.erf per element is exact
    but runs at Python speed, so approximate="tanh" is the fast GELU."""
    return 0.5 * (1.0 + np.asarray(_erf(x / math.sqrt(2)), dtype=x.dtype))


def uses_tanh(approximate: str) -> bool:
    if approximate not in ("none", "tanh"):
        raise ConfigError(f"gelu approximate={approximate!r} is not valid (expected 'none' or 'tanh')")
    return approximate == "tanh"


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """x Phi(x), or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks & Gimpel 2016)."""
    if uses_tanh(approximate):
        return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    return x * normal_cdf(x)


def gelu_grad(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if uses_tanh(approximate):
        t = np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - np.square(t)) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x**2)
    pdf = np.exp(-0.5 * np.square(x)) / math.sqrt(2 * math.pi)
    return normal_cdf(x) + x * pdf


def softsign(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.abs(x))


def softsign_grad(x: np.ndarray) -> np.ndarray:
    return 1.0 / np.square(1.0 + np.abs(x))


def identity(x: np.ndarray) -> np.ndarray:
    return x


def identity_grad(x: np.ndarray) -> np.ndarray:
    return np.ones_like(x)


def maxout(pieces: np.ndarray, axis: int = 0) -> np.ndarray:
    """max over the k pieces stacked on `axis` (Goodfellow et al. 2013)."""
    return pieces.max(axis)


def maxout_grad(pieces: np.ndarray, axis: int = 0) -> np.ndarray:
    """1 for the winning piece, 0 for the rest, in the pieces' shape."""
    grad = np.zeros_like(pieces)
    np.put_along_axis(grad, np.expand_dims(pieces.argmax(axis), axis), 1.0, axis)
    return grad


for _name, _forward, _derivative in [
    ("sigmoid", sigmoid, sigmoid_grad),
    ("tanh", tanh, tanh_grad),
    ("relu", relu, relu_grad),
    ("leaky_relu", leaky_relu, leaky_relu_grad),
    ("prelu", prelu, prelu_grad),
    ("elu", elu, elu_grad),
    ("relu6", relu6, relu6_grad),
    ("swish", swish, swish_grad),
    ("silu", silu, silu_grad),
    ("mish", mish, mish_grad),
    ("gelu", gelu, gelu_grad),
    ("softplus", softplus, softplus_grad),
    ("softsign", softsign, softsign_grad),
    ("identity", identity, identity_grad),
    ("maxout", maxout, maxout_grad),
]:
    register(_name, _forward, _derivative)
