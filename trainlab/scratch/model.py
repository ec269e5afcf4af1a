"""Models of the NumPy engine: a `Sequential` of layers with a loss, and the lectures' `MLP`.

    model = MLP([784, 100, 50, 10], act="relu", seed=0)   # Affine, Activation, Affine, Activation, Affine
    loss, grads = model.gradients(X, y)                    # grads["0.W"] has the shape of model.params["0.W"]

`model.params` names each array "{layer index}.{param}" ("0.W", "0.b", "2.W", ...); the arrays are the
layers' own, so an optimiser that updates them in place trains the model. `gradients` is backpropagation
as the lectures write it: a forward pass in train mode, the loss's dL/d scores, then each layer's backward
from the last to the first. Like autograd it computes no dL/dX for the input: the first layer with
parameters only fills its grads, and the parameter-free layers before it are not visited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainlab.errors import ConfigError
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.scratch.layers import Activation, Affine, Dropout, Layer
from trainlab.scratch.losses import LossFn, PenaltyFn, create_loss, decode


class Sequential:
    """Layers applied in order, with a loss (a name from trainlab.scratch.losses.LOSSES, or a callable
    (scores, y) -> (loss, dscores)) and an optional penalty(params) -> (value, grads), such as
    create_penalty("l2", 1e-3), added to the loss."""

    def __init__(
        self,
        layers: Sequence[Layer],
        loss: str | LossFn = "softmax_cross_entropy",
        penalty: PenaltyFn | None = None,
    ):
        self.layers = list(layers)
        self.loss_spec = loss  # the name, for decoding predictions
        self.loss = create_loss(loss)
        self.penalty = penalty
        self.params: dict[str, np.ndarray] = {}
        self.collect_params()

    def collect_params(self) -> None:
        """(Re)build `params` from the layers, in place: whoever holds the dict sees the new arrays."""
        self.params.clear()
        self.params.update(
            {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}
        )

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """State that is not trained (batch norm's running statistics), named like params."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()}

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype if self.params else np.dtype(np.float64)

    def forward(self, X: np.ndarray, train: bool = False) -> np.ndarray:
        """The scores; `train` selects dropout's and batch norm's training behaviour."""
        for layer in self.layers:
            X = layer.forward(X, train)
        return X

    __call__ = forward

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Every layer's backward, last to first, after a forward pass; returns dL/dX."""
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def gradients(
        self, X: np.ndarray, y: np.ndarray, train: bool = True
    ) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads) on the batch (X, y), in train mode (or eval mode: train=False); grads named and
        shaped like `params`."""
        loss, dout = self.loss(self.forward(X, train), y)
        first = next((i for i, layer in enumerate(self.layers) if layer.params), None)
        if first is not None:
            for layer in reversed(self.layers[first + 1 :]):
                dout = layer.backward(dout)
            self.layers[first].backward_params(dout)
        grads = {f"{i}.{k}": g for i, layer in enumerate(self.layers) for k, g in layer.grads.items()}
        if self.penalty is not None:
            value, penalty_grads = self.penalty(self.params)
            loss += value
            for name, g in penalty_grads.items():
                grads[name] = grads[name] + g
        return loss, grads

    def loss_value(self, X: np.ndarray, y: np.ndarray, train: bool = False) -> float:
        """The loss (with the penalty) on (X, y), without backward."""
        loss, _ = self.loss(self.forward(X, train), y)
        return loss + (self.penalty(self.params)[0] if self.penalty is not None else 0.0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Eval-mode predictions: class indices for classification losses, the outputs for mse."""
        return decode(self.loss_spec, self.forward(X))

    def astype(self, dtype: Any) -> Sequential:
        """Cast every layer's arrays to `dtype`; `params` stays the same dict, holding the new arrays."""
        for layer in self.layers:
            layer.astype(dtype)
        self.collect_params()
        return self

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        loss = self.loss_spec if isinstance(self.loss_spec, str) else getattr(self.loss, "__name__", "custom")
        return f"Sequential(loss={loss!r}{inner}\n)"


def MLP(  # a builder named like the model it builds, as timm's thin functions are
    sizes: Sequence[int],
    act: str | dict[str, Any] = "relu",
    init: str = "he",
    seed: int = 0,
    loss: str | LossFn = "softmax_cross_entropy",
    dropout: float = 0.0,
    dropout_mode: str = "inverted",
    penalty: PenaltyFn | None = None,
    dtype: Any = np.float32,
) -> Sequential:
    """sizes [d_0, d_1, ..., d_L]: for each hidden layer Affine -> Activation (-> Dropout when
    dropout > 0), then an Affine to the d_L scores, as trainlab's torch `mlp` lays it out. `act` is a name
    or {"name": ..., **options}; maxout widens its Affine to k * d_l outputs. One np.random.default_rng(seed)
    draws every weight, layer by layer, then the dropout masks."""
    if len(sizes) < 2:
        raise ConfigError(f"MLP sizes={list(sizes)} is not valid (expected [inputs, ..., outputs])")
    options = {k: v for k, v in act.items() if k != "name"} if isinstance(act, dict) else {}
    name = FORMULAS.canonical(act["name"] if isinstance(act, dict) else act)
    widen = options.get("k", 2) if name == "maxout" else 1
    rng = np.random.default_rng(seed)
    layers: list[Layer] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Affine(fan_in, widen * fan_out, init, rng, dtype))
        layers.append(Activation(name, **options))
        if dropout > 0:
            layers.append(Dropout(dropout, dropout_mode, rng))
    layers.append(Affine(sizes[-2], sizes[-1], init, rng, dtype))
    return Sequential(layers, loss, penalty).astype(dtype)
