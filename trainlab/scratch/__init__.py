"""trainlab.scratch: backpropagation from scratch, a NumPy engine that never imports torch.

    from trainlab.scratch import MLP, SGD, fit, gradient_check
    model = MLP([784, 100, 50, 10], act="relu", seed=0)
    history = fit(model, SGD(model.params, lr=0.1), X, y, epochs=10, batch_size=128)
    gradient_check(MLP([6, 5, 3], act="tanh", dtype=np.float64), X[:4, :6], y[:4])  # {"0.W": 1e-10, ...}

layers (Affine, Activation for every registered activation, Dropout, BatchNorm, Flatten), conv (Conv2d,
MaxPool2d, AvgPool2d, lenet5), losses and penalties, model (Sequential, MLP), optim (SGD, Momentum,
Nesterov, Adam), init, gradcheck, perceptron (Perceptron, LogisticUnit), train (fit) and graph (Value,
Tensor, draw: the computational graph). Weights are laid out as the lectures write them, out = x.dot(W)
with W (fan_in, fan_out), and tests/scratch checks every gradient numerically and against PyTorch.
"""

from trainlab.scratch.conv import AvgPool2d, Conv2d, MaxPool2d, lenet5
from trainlab.scratch.gradcheck import gradient_check, relative_error
from trainlab.scratch.graph import Tensor, Value, draw
from trainlab.scratch.init import INITIALIZERS, create_init
from trainlab.scratch.layers import Activation, Affine, BatchNorm, Dropout, Flatten, Layer, Maxout, PReLU
from trainlab.scratch.losses import (
    LOSSES,
    PENALTIES,
    create_loss,
    create_penalty,
    elastic_net,
    l1,
    l2,
    mse,
    multiclass_svm,
    sigmoid_cross_entropy,
    softmax_cross_entropy,
)
from trainlab.scratch.model import MLP, Sequential
from trainlab.scratch.optim import OPTIMIZERS, SGD, Adam, Momentum, Nesterov, Optimizer, create_optimizer
from trainlab.scratch.perceptron import LogisticUnit, Perceptron
from trainlab.scratch.train import evaluate, fit

__all__ = [
    "INITIALIZERS",
    "LOSSES",
    "MLP",
    "OPTIMIZERS",
    "PENALTIES",
    "SGD",
    "Activation",
    "Adam",
    "Affine",
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Layer",
    "LogisticUnit",
    "MaxPool2d",
    "Maxout",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "PReLU",
    "Perceptron",
    "Sequential",
    "Tensor",
    "Value",
    "create_init",
    "create_loss",
    "create_optimizer",
    "create_penalty",
    "draw",
    "elastic_net",
    "evaluate",
    "fit",
    "gradient_check",
    "l1",
    "l2",
    "lenet5",
    "mse",
    "multiclass_svm",
    "relative_error",
    "sigmoid_cross_entropy",
    "softmax_cross_entropy",
]
