"""Convolution and pooling as matrix products: im2col forward, col2im backward (cs231n, "Convolutional
Neural Networks"; Chellapilla, Puri & Simard 2006, "High Performance Convolutional Neural Networks for
Document Processing"), and LeNet-5 built from them (LeCun et al. 1998), layer for layer as trainlab's
torch `lenet5` (trainlab.models.lenet) builds it, so the two can be checked against each other.

A convolution with filters W (C_out, C_in, k, k) and stride s computes, for every output pixel (i, j),
the dot product of each filter with the k x k patch of every input channel under it:

    out[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] x[n, c, s i + p, s j + q]

im2col lays each patch out as one column of cols (C_in k k, H_out W_out N), one column per output pixel
of every sample, so the whole batch is one matrix product, out = W.reshape(C_out, -1) @ cols. Backward
is three products,
    dW = dout @ cols^T,   db = dout summed over its columns,   dcols = W^T @ dout,
and col2im adds each column of dcols back onto the pixels its patch came from. A pixel sits in up to
k x k patches, so its gradient is a sum; col2im loops over the k x k kernel offsets (never over samples
or pixels), each one a strided add of a whole (C, H_out, W_out, N) block.

Memory layout. Inputs and outputs are NCHW, but the layers here work on x.transpose(1, 2, 3, 0), of shape
(C, H, W, N), with the batch innermost (cuda-convnet's layout, Krizhevsky et al. 2012): each window copy
and each col2im add then runs over rows of N contiguous numbers rather than W_out of them. The outputs
are NCHW views of (C, H, W, N) memory, so the next layer's transpose costs nothing.

Output size (H + 2P - k) // s + 1: like PyTorch, a stride that does not tile the input drops the last
rows and columns. Pooling (stride = kernel unless given) uses the same windows and the same col2im:
max pooling routes each gradient to its window's maximum, average pooling spreads it evenly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trainlab.errors import TrainlabError
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.nn.shapes import conv_output_size
from trainlab.scratch.init import create_init
from trainlab.scratch.layers import Activation, Affine, Flatten, Layer
from trainlab.scratch.model import Sequential


def batch_last(x: np.ndarray) -> np.ndarray:
    """NCHW -> (C, H, W, N), a view."""
    if x.ndim != 4:
        raise TrainlabError(f"expected an input (N, C, H, W), got shape {x.shape}")
    return x.transpose(1, 2, 3, 0)


def batch_first(x: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> NCHW, a view."""
    return x.transpose(3, 0, 1, 2)


def windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Every k x k window of x (C, H, W, N) at the given stride, as a view (C, k, k, H_out, W_out, N)."""
    if min(x.shape[1:3]) < kernel:
        raise TrainlabError(f"a {kernel}x{kernel} window does not fit in an input of H, W = {x.shape[1:3]}")
    win = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return win.transpose(0, 4, 5, 1, 2, 3)


def im2col(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """x (C, H, W, N) -> cols (C k k, H_out W_out N): one column per output pixel (the one copy)."""
    win = windows(x, kernel, stride)
    return win.reshape(x.shape[0] * kernel * kernel, -1)


def col2im(cols: np.ndarray, shape: tuple[int, ...], stride: int) -> np.ndarray:
    """The adjoint of `windows`: cols (C, k, k, H_out, W_out, N) summed back into an array of `shape`
    (C, H, W, N). Offset (p, q) of window (i, j) is pixel (s i + p, s j + q)."""
    k, h_out, w_out = cols.shape[1], cols.shape[3], cols.shape[4]
    dx = np.zeros(shape, dtype=cols.dtype)
    for p in range(k):
        for q in range(k):
            dx[:, p : p + stride * h_out : stride, q : q + stride * w_out : stride] += cols[:, p, q]
    return dx


class Conv2d(Layer):
    """2-D convolution, params W (C_out, C_in, k, k), drawn by the initialiser `init` with
    fan_in = C_in k k, and b (C_out,) = 0."""

    def __init__(
        self, c_in, c_out, kernel, stride=1, padding=0, init="he", rng=None, dtype: Any = np.float32
    ):
        super().__init__()
        self.c_in, self.kernel, self.stride, self.padding = c_in, kernel, stride, padding
        self.params = {
            "W": create_init(init, (c_out, c_in, kernel, kernel), rng=rng, dtype=dtype),
            "b": np.zeros(c_out, dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.c_in:
            raise TrainlabError(f"Conv2d expects an input (N, {self.c_in}, H, W), got shape {x.shape}")
        p = self.padding
        xp = np.pad(batch_last(x), ((0, 0), (p, p), (p, p), (0, 0)))  # (C_in, H + 2P, W + 2P, N)
        self.cols = im2col(xp, self.kernel, self.stride)  # (C_in k k, H_out W_out N)
        W, b = self.params["W"], self.params["b"]
        out = W.reshape(len(W), -1) @ self.cols + b[:, None]  # (C_out, H_out W_out N)
        h_out, w_out = ((n - self.kernel) // self.stride + 1 for n in xp.shape[1:3])
        self.x_shape, self.xp_shape = x.shape, xp.shape
        return batch_first(out.reshape(len(W), h_out, w_out, len(x)))

    def backward_params(self, dout: np.ndarray) -> None:
        dout = batch_last(dout).reshape(dout.shape[1], -1)  # (C_out, H_out W_out N)
        self.grads["W"] = (dout @ self.cols.T).reshape(self.params["W"].shape)
        self.grads["b"] = dout.sum(axis=1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.backward_params(dout)
        n, c_out, h_out, w_out = dout.shape
        W, k, p = self.params["W"], self.kernel, self.padding
        dcols = W.reshape(c_out, -1).T @ batch_last(dout).reshape(c_out, -1)  # (C_in k k, H_out W_out N)
        dxp = col2im(dcols.reshape(self.c_in, k, k, h_out, w_out, n), self.xp_shape, self.stride)
        return batch_first(dxp[:, p : p + self.x_shape[2], p : p + self.x_shape[3]])

    def __repr__(self) -> str:
        c_out, c_in, k, _ = self.params["W"].shape
        return f"Conv2d({c_in}, {c_out}, {k}, stride={self.stride}, padding={self.padding})"


class MaxPool2d(Layer):
    """Max over each k x k window. The gradient goes to the window's maximum only (the first one if
    values tie, where the max is not differentiable)."""

    def __init__(self, kernel: int, stride: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        x = batch_last(x)
        k = self.kernel
        win = windows(x, k, self.stride)  # (C, k, k, H_out, W_out, N)
        flat = win.reshape(len(win), k * k, *win.shape[3:])  # (C, k k, H_out, W_out, N)
        argmax = flat.argmax(axis=1)
        self.x_shape, self.argmax = x.shape, argmax
        return batch_first(np.take_along_axis(flat, argmax[:, None], axis=1)[:, 0])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        k = self.kernel
        offsets = np.arange(k * k).reshape(k, k, 1, 1, 1)
        won = self.argmax[:, None, None] == offsets  # (C, k, k, H_out, W_out, N): where each max came from
        cols = np.where(won, batch_last(dout)[:, None, None], 0)
        return batch_first(col2im(cols, self.x_shape, self.stride))

    def __repr__(self) -> str:
        return f"MaxPool2d({self.kernel}, stride={self.stride})"


class AvgPool2d(Layer):
    """Mean over each k x k window; each input in a window gets 1/k^2 of its gradient."""

    def __init__(self, kernel: int, stride: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        x = batch_last(x)
        self.x_shape = x.shape
        return batch_first(windows(x, self.kernel, self.stride).mean(axis=(1, 2)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        k = self.kernel
        share = batch_last(dout)[:, None, None] / (k * k)  # (C, 1, 1, H_out, W_out, N)
        cols = np.broadcast_to(share, (share.shape[0], k, k, *share.shape[3:]))
        return batch_first(col2im(cols, self.x_shape, self.stride))

    def __repr__(self) -> str:
        return f"AvgPool2d({self.kernel}, stride={self.stride})"


def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    act: str | dict[str, Any] = "tanh",
    init: str = "he",
    seed: int = 0,
    dtype: Any = np.float32,
) -> Sequential:
    """C1: 6 filters 5x5 -> S2: 2x2 average pooling -> C3: 16 filters 5x5 -> S4 -> C5: FC 120 -> F6: FC 84
    -> output, with softmax cross-entropy. A 28x28 input is zero-padded by 2 in C1, so that every layer
    has the paper's 32x32 sizes: 28, 14, 10, 5, and C5 sees 16 x 5 x 5 = 400. `act` is a name or
    {"name": ..., **options}; maxout widens the layer before it to k times the outputs, as the torch model
    does. One np.random.default_rng(seed) draws every weight, layer by layer, as MLP does."""
    options = {k: v for k, v in act.items() if k != "name"} if isinstance(act, dict) else {}
    name = act["name"] if isinstance(act, dict) else act
    k = options.get("k", 2) if FORMULAS.canonical(name) == "maxout" else 1
    rng = np.random.default_rng(seed)
    pad = max(0, (32 - image_size) // 2)  # grow small digits to the 32x32 the layer sizes assume
    size = conv_output_size(conv_output_size(image_size, 5, pad), 2, 0, 2)  # after C1, S2
    size = conv_output_size(conv_output_size(size, 5), 2, 0, 2)  # after C3, S4
    layers = [
        Conv2d(in_channels, k * 6, 5, padding=pad, init=init, rng=rng, dtype=dtype),  # C1
        Activation(name, **options),
        AvgPool2d(2),  # S2
        Conv2d(6, k * 16, 5, init=init, rng=rng, dtype=dtype),  # C3
        Activation(name, **options),
        AvgPool2d(2),  # S4
        Flatten(),
        Affine(16 * size * size, k * 120, init, rng, dtype),  # C5
        Activation(name, **options),
        Affine(120, k * 84, init, rng, dtype),  # F6
        Activation(name, **options),
        Affine(84, num_classes, init, rng, dtype),
    ]
    return Sequential(layers, loss="softmax_cross_entropy")
