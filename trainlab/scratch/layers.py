"""Layers of the NumPy engine, each a forward / backward pair written from the lectures' formulas.

A layer's `forward(x, train)` returns its output and caches what `backward` needs; `backward(dout)` takes
dL/d out, fills `self.grads` (dL/d param, the same keys and shapes as `self.params`) and returns dL/d x.
This is the four-step backpropagation algorithm one layer at a time (Rumelhart, Hinton & Williams 1986;
Nielsen 2015, ch. 2): an affine layer computes z = a W + b, an activation a = sigma(z), and backward turns
delta = dL/dz into dL/dW = a^T delta, dL/db = sum delta and dL/da = delta W^T, while the activation
multiplies by sigma'(z) elementwise. Arrays keep the dtype they arrive in (float32 stays float32).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from trainlab.errors import ConfigError, TrainlabError
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.registry import suggest
from trainlab.scratch.init import create_init


class Layer:
    """Base class. `params` and `grads` map names to arrays of the same shapes; `buffers` holds state that
    is not trained (batch norm's running statistics)."""

    buffers: dict[str, np.ndarray] = {}  # read-only default: layers with buffers assign their own dict

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, dout: np.ndarray) -> None:
        """Fill `self.grads` when nobody needs dL/dx (the model's first layer with parameters, as autograd
        skips inputs that need no gradient). Layers that can skip computing dx override it."""
        self.backward(dout)

    def astype(self, dtype: Any) -> Layer:
        """Cast params, grads and buffers to `dtype` (new arrays, unless already of it); returns the layer."""
        self.params = {k: v.astype(dtype, copy=False) for k, v in self.params.items()}
        self.grads = {k: v.astype(dtype, copy=False) for k, v in self.grads.items()}
        self.buffers = {k: v.astype(dtype, copy=False) for k, v in self.buffers.items()}
        return self

    def __call__(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        return self.forward(x, train)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


class Affine(Layer):
    """out = x.dot(W) + b with W (fan_in, fan_out), as the lectures write it. x (N, d_1, ..., d_k) is read
    as (N, d_1 * ... * d_k), as cs231n's affine_forward does, so images need no Flatten in front."""

    def __init__(self, fan_in: int, fan_out: int, init: str = "he", rng: Any = None, dtype: Any = np.float32):
        super().__init__()
        self.params = {
            "W": create_init(init, (fan_in, fan_out), rng=rng, dtype=dtype),
            "b": np.zeros(fan_out, dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x_shape = x.shape
        self.x = x.reshape(len(x), -1)  # (N, fan_in), a view of contiguous input
        out = self.x.dot(self.params["W"])  # (N, fan_out)
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.backward_params(dout)
        return dout.dot(self.params["W"].T).reshape(self.x_shape)

    def backward_params(self, dout: np.ndarray) -> None:
        self.grads["W"] = self.x.T.dot(dout)  # a^T delta, (fan_in, fan_out)
        self.grads["b"] = dout.sum(0)


def check_options(options: dict[str, Any], accepted: tuple[str, ...] | list[str], what: str) -> None:
    for key in options:
        if key not in accepted:
            raise ConfigError(suggest(key, list(accepted), f"option for {what}:"))


class Activation(Layer):
    """a = f(z) elementwise for every activation in trainlab's registry, from the closed forms in
    trainlab.nn.activation_formulas; backward is delta = dout * f'(z), the four-step algorithm's
    (.) sigma'(z). `Activation("prelu")` and `Activation("maxout")` build the PReLU and Maxout layers below.
    Options are the torch modules' (slope, alpha, beta, approximate; prelu: num_parameters, init;
    maxout: k)."""

    def __new__(cls, name: str | None = None, **options: Any):
        if cls is Activation and name is not None:
            cls = {"prelu": PReLU, "maxout": Maxout}.get(FORMULAS.canonical(name), cls)
            if cls is not Activation:
                accepted = list(inspect.signature(cls.__init__).parameters)[2:]  # after self and name
                check_options(options, accepted, f"activation {name!r}")
        return super().__new__(cls)

    def __init__(self, name: str, **options: Any):
        super().__init__()
        self.name = FORMULAS.canonical(name)
        self.formula = FORMULAS.get(self.name)
        check_options(options, self.formula.options, f"activation {self.name!r}")
        self.formula.forward(np.zeros(1), **options)  # a bad option value (gelu's approximate) fails here
        self.options = options

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x = x
        return self.formula.forward(x, **self.options)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.formula.derivative(self.x, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Activation({self.name!r}{options})"


class PReLU(Activation):
    """max(a x, x) with a learned slope a (He et al. 2015): param "a", one shared (num_parameters=1) or
    one per channel (axis 1), initialised to `init`. dL/da = sum over the other axes of dout * min(x, 0)."""

    def __init__(
        self, name: str = "prelu", num_parameters: int = 1, init: float = 0.25, dtype: Any = np.float32
    ):
        Layer.__init__(self)
        self.name, self.formula = "prelu", FORMULAS.get("prelu")
        self.params = {"a": np.full(num_parameters, init, dtype)}
        self.grads = {"a": np.zeros(num_parameters, dtype)}

    @property
    def options(self) -> dict[str, Any]:
        return {"slope": self.params["a"]}

    def backward(self, dout: np.ndarray) -> np.ndarray:
        contribution = dout * np.minimum(self.x, 0.0)  # d(a x) / da where x <= 0
        axes = tuple(a for a in range(dout.ndim) if a != 1 or len(self.params["a"]) == 1)
        self.grads["a"] = contribution.sum(axes).reshape(self.params["a"].shape)
        return super().backward(dout)

    def __repr__(self) -> str:
        return f"PReLU(num_parameters={len(self.params['a'])})"


class Maxout(Activation):
    """max over k pieces (Goodfellow et al. 2013): x (N, k * C, ...) -> (N, C, ...), the pieces laid out
    piece-major, x.reshape(N, k, C, ...), as trainlab's torch Maxout does. It has no parameters of its own:
    put it after an Affine(fan_in, k * fan_out) (MLP does) or a conv with k * C output channels."""

    def __init__(self, name: str = "maxout", k: int = 2):
        Layer.__init__(self)
        if k < 2:
            raise ConfigError(f"maxout k={k} is not valid (expected an integer >= 2)")
        self.name, self.formula, self.k, self.options = "maxout", FORMULAS.get("maxout"), k, {"k": k}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        if x.shape[1] % self.k:
            raise TrainlabError(f"maxout k={self.k} needs k * C input features, got {x.shape[1]}")
        self.x_shape = x.shape
        self.pieces = x.reshape(len(x), self.k, -1, *x.shape[2:])  # (N, k, C, ...)
        return self.formula.forward(self.pieces, axis=1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        winners = self.formula.derivative(self.pieces, axis=1)  # (N, k, C, ...), one-hot over k
        return (winners * np.expand_dims(dout, 1)).reshape(self.x_shape)


class Dropout(Layer):
    """Keep each unit with probability 1 - p (Srivastava et al. 2014), in either convention:

        inverted (default):  train  x * m / (1 - p),   eval  x
        test_scale:          train  x * m,             eval  x * (1 - p)   (the lectures' first version)

    with m ~ Bernoulli(1 - p) drawn from `rng` (a np.random.Generator; None: a fresh unseeded one)."""

    MODES = ("inverted", "test_scale")

    def __init__(self, p: float = 0.5, mode: str = "inverted", rng: Any = None):
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"dropout p={p} is not valid (expected 0 <= p < 1, the drop probability)")
        if mode not in self.MODES:
            raise ConfigError(f"dropout mode={mode!r} is not valid (expected 'inverted' or 'test_scale')")
        self.p, self.mode = p, mode
        self.rng = rng if rng is not None else np.random.default_rng()

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        keep = 1.0 - self.p
        self.multiplier = None  # the identity
        if not train and self.mode == "test_scale":
            self.multiplier = keep
        elif train and self.p > 0:
            mask = self.rng.random(x.shape, dtype=x.dtype) < keep
            # divide by a 0-d array of x's dtype: a Python float would turn the bool mask into float64
            self.multiplier = (
                mask / np.asarray(keep, x.dtype) if self.mode == "inverted" else mask.astype(x.dtype)
            )
        return x if self.multiplier is None else x * self.multiplier

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self.multiplier is None else dout * self.multiplier

    def __repr__(self) -> str:
        return f"Dropout(p={self.p}, mode={self.mode!r})"


class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per feature of (N, D) or channel of (N, C, H, W)
    (Ioffe & Szegedy 2015), with torch.nn.BatchNorm's conventions:

    - train: the batch's mean and biased variance normalise; the running statistics move by
      r = (1 - momentum) r + momentum * s, with the unbiased variance (times n / (n - 1));
    - eval: the running statistics normalise (running_mean 0 and running_var 1 at first).

    Backward in train mode, with m = n values per channel and x_hat the normalised input:
    dx = gamma / (m sqrt(var + eps)) * (m dout - sum dout - x_hat sum(dout x_hat)).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, dtype: Any = np.float32):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.params = {"gamma": np.ones(num_features, dtype), "beta": np.zeros(num_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {
            "running_mean": np.zeros(num_features, dtype),
            "running_var": np.ones(num_features, dtype),
        }

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.axes = (0, *range(2, x.ndim))  # every axis but the channel's
        self.shape = (1, -1) + (1,) * (x.ndim - 2)  # (1, C) or (1, C, 1, 1), to broadcast per channel
        self.train = train
        if train:
            n = x.size // x.shape[1]
            if n < 2:
                raise TrainlabError("batch norm in train mode needs more than 1 value per channel")
            mean, var = x.mean(self.axes), x.var(self.axes)
            m = self.momentum
            self.buffers["running_mean"] *= 1 - m
            self.buffers["running_mean"] += m * mean
            self.buffers["running_var"] *= 1 - m
            self.buffers["running_var"] += (m * n / (n - 1)) * var
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv_std = (1.0 / np.sqrt(var + self.eps)).reshape(self.shape)
        self.x_hat = (x - mean.reshape(self.shape)) * self.inv_std
        return self.params["gamma"].reshape(self.shape) * self.x_hat + self.params["beta"].reshape(self.shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["beta"] = dout.sum(self.axes)
        self.grads["gamma"] = (dout * self.x_hat).sum(self.axes)
        scale = self.params["gamma"].reshape(self.shape) * self.inv_std
        if not self.train:  # the statistics are constants
            return dout * scale
        m = dout.size // dout.shape[1]
        dbeta, dgamma = self.grads["beta"].reshape(self.shape), self.grads["gamma"].reshape(self.shape)
        return (scale / m) * (m * dout - dbeta - self.x_hat * dgamma)

    def __repr__(self) -> str:
        return f"BatchNorm({len(self.params['gamma'])}, momentum={self.momentum}, eps={self.eps})"


class Flatten(Layer):
    """(N, d_1, ..., d_k) -> (N, d_1 * ... * d_k), a view; backward restores the shape."""

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.x_shape)

    def __repr__(self) -> str:
        return "Flatten()"
