"""The NumPy engine against PyTorch (here, in the tests only): the same weights and the same batch give the
same values and gradients, and the same training run gives the same weights.

Everything is float64 on both sides. The two compute the same sums in other orders (BLAS kernels, other
formulas for one function, e.g. sigmoid from e^-|x|), which moves each result by a few ulps, ~1e-16
relative to the magnitude of the terms; the terms here are O(1), so 1e-10 leaves a wide margin and still
catches any wrong term, factor or transpose. Training compounds those ulps over 200 steps, and 1e-8
bounds the weights after them.

Layout: a torch Linear's weight is (out, in) and computes x W^T + b; the engine's W is (in, out) and
computes x.dot(W) + b, as the lectures write it, so W = weight.T.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trainlab
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.nn.activations import ACTIVATIONS, create_activation, registered_name
from trainlab.nn.regularize import create_penalty as torch_penalty
from trainlab.scratch.layers import BatchNorm
from trainlab.scratch.losses import (
    create_penalty,
    mse,
    multiclass_svm,
    sigmoid_cross_entropy,
    softmax_cross_entropy,
)
from trainlab.scratch.model import MLP
from trainlab.scratch.optim import SGD, Adam, Momentum, Nesterov
from trainlab.scratch.train import fit

RTOL, ATOL = 1e-10, 1e-12
VARIANTS = [(name, {}) for name in ACTIVATIONS.list() if name != "maxout"] + [
    ("leaky_relu", {"slope": 0.1}),
    ("elu", {"alpha": 0.5}),
    ("swish", {"beta": 2.0}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 3.0}),
    ("prelu", {"num_parameters": 4, "init": 0.1}),
]


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def copy_weights(torch_model: torch.nn.Module, scratch_model) -> list[str]:
    """Torch's parameters into the scratch model, in order (the two lay layers out alike); the names."""
    pairs = list(zip(torch_model.named_parameters(), scratch_model.params))
    assert len(pairs) == len(scratch_model.params) == len(list(torch_model.parameters()))
    for (_, p), name in pairs:
        value = to_numpy(p).T if p.dim() == 2 else to_numpy(p)
        assert scratch_model.params[name].shape == value.shape, name
        scratch_model.params[name][...] = value
    return [name for _, name in pairs]


def test_every_registered_activation_has_a_numpy_formula():
    assert FORMULAS.list() == ACTIVATIONS.list()


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
def test_formulas_match_the_torch_modules(name, options):
    """Values against the torch module and derivatives against autograd, the formula's and the torch
        module's `derivative` of a NumPy array, on a grid over [-6, 6] in 4 channels, with autograd's
    conventions at the kinks (relu'(0) = 0, relu6'(6) = 0, elu'(0) = alpha). Softplus stays below
        beta x = 20, where torch switches to the identity (a gap of e^-20 / beta)."""
    act = create_activation(name, **options).double()
    grid = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    x = torch.cat([grid, torch.tensor([0.0, 6.0, -1e-9], dtype=torch.float64)]).view(
        -1, 4, 1
    )  # and the kinks
    x.requires_grad_(True)
    out = act(x)
    out.sum().backward()
    formula = FORMULAS.get(registered_name(act))  # silu's module is swish with beta = 1
    numpy_options = act.formula_options()
    assert_close(formula.forward(to_numpy(x), **numpy_options), to_numpy(out))
    assert_close(formula.derivative(to_numpy(x), **numpy_options), to_numpy(x.grad))
    assert_close(act.derivative(to_numpy(x)), to_numpy(x.grad))  # nn's NumPy path is the formula
    if not options and name != "prelu":  # and the formula registered under the name itself
        assert_close(FORMULAS.get(name).forward(to_numpy(x)), to_numpy(out))


def test_maxout_formula_matches_torch():
    pieces = torch.randn(3, 50, dtype=torch.float64, requires_grad=True)
    pieces.amax(0).sum().backward()
    assert_close(FORMULAS.get("maxout").forward(to_numpy(pieces)), to_numpy(pieces.amax(0)))
    assert_close(FORMULAS.get("maxout").derivative(to_numpy(pieces)), to_numpy(pieces.grad))


@pytest.mark.parametrize("act", ACTIVATIONS.list())
def test_mlp_loss_and_gradients_match_torch_mlp(act):
    """trainlab's torch `mlp` and the scratch MLP with its weights, on one batch: the same loss, the same
    gradient for every parameter (maxout and prelu included)."""
    torch.manual_seed(0)
    net = trainlab.create_model("mlp", in_features=12, num_classes=5, widths=(9, 7), act=act).double()
    model = MLP([12, 9, 7, 5], act=act, dtype=np.float64)
    names = copy_weights(net, model)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((16, 12)), rng.integers(0, 5, 16)
    loss = F.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    scratch_loss, grads = model.gradients(X, y)
    assert scratch_loss == pytest.approx(loss.item(), rel=RTOL)
    for (_, p), name in zip(net.named_parameters(), names):
        assert_close(grads[name], to_numpy(p.grad).T if p.dim() == 2 else to_numpy(p.grad))


@pytest.mark.parametrize("shape", [(10, 3), (6, 3, 4, 5)], ids=["BatchNorm1d", "BatchNorm2d"])
def test_batchnorm_matches_torch_in_train_and_eval_mode(shape):
    rng = np.random.default_rng(0)
    torch_bn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3, momentum=0.1).double()
    with torch.no_grad():
        torch_bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2, 3)))
        torch_bn.bias.copy_(torch.from_numpy(rng.standard_normal(3)))
    bn = BatchNorm(3, dtype=np.float64)
    bn.params["gamma"][...], bn.params["beta"][...] = to_numpy(torch_bn.weight), to_numpy(torch_bn.bias)
    for _ in range(3):  # the running statistics move three times
        x = 2 * rng.standard_normal(shape) + 1
        dout = rng.standard_normal(shape)
        xt = torch.from_numpy(x).requires_grad_(True)
        torch_bn.zero_grad()
        out = torch_bn(xt)
        out.backward(torch.from_numpy(dout))
        assert_close(bn.forward(x, train=True), to_numpy(out))
        assert_close(bn.backward(dout), to_numpy(xt.grad))
        assert_close(bn.grads["gamma"], to_numpy(torch_bn.weight.grad))
        assert_close(bn.grads["beta"], to_numpy(torch_bn.bias.grad))
    assert_close(bn.buffers["running_mean"], to_numpy(torch_bn.running_mean))
    assert_close(bn.buffers["running_var"], to_numpy(torch_bn.running_var))  # unbiased, as torch's
    torch_bn.eval()
    x = rng.standard_normal(shape)
    assert_close(bn.forward(x, train=False), to_numpy(torch_bn(torch.from_numpy(x))))


def torch_value_and_grad(fn, array: np.ndarray) -> tuple[float, np.ndarray]:
    t = torch.from_numpy(array.copy()).requires_grad_(True)
    loss = fn(t)
    loss.backward()
    return loss.item(), to_numpy(t.grad)


def test_losses_match_torch():
    rng = np.random.default_rng(0)
    scores, y = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    logits, binary, target = rng.standard_normal((8, 1)), rng.integers(0, 2, 8), rng.standard_normal((8, 5))
    yt = torch.from_numpy(y)
    cases = [
        (softmax_cross_entropy, scores, y, lambda s: F.cross_entropy(s, yt)),
        # torch's multi_margin_loss also divides by the number of classes; the decks' SVM loss does not
        (multiclass_svm, scores, y, lambda s: 5 * F.multi_margin_loss(s, yt, margin=1.0)),
        (
            sigmoid_cross_entropy,
            logits,
            binary,
            lambda s: F.binary_cross_entropy_with_logits(s[:, 0], torch.from_numpy(binary).double()),
        ),
        (mse, scores, target, lambda s: F.mse_loss(s, torch.from_numpy(target))),
    ]
    for loss_fn, inputs, labels, torch_fn in cases:
        loss, dscores = loss_fn(inputs, labels)
        torch_loss, torch_grad = torch_value_and_grad(torch_fn, inputs)
        assert loss == pytest.approx(torch_loss, rel=RTOL), loss_fn.__name__
        assert_close(dscores, torch_grad)


@pytest.mark.parametrize(
    "name,scratch_options,torch_strength,torch_options",
    [("l2", {}, 0.01, {}), ("l1", {}, 0.01, {}), ("elastic_net", {"l1_ratio": 0.25}, 0.0025, {"beta": 3.0})],
    ids=["l2", "l1", "elastic_net"],
)
def test_penalties_match_trainlab_torch_penalties(name, scratch_options, torch_strength, torch_options):
    """Weights only, as trainlab.nn.regularize does. Its elastic net, s (beta W^2 + |W|), is l1_ratio =
    1 / (1 + beta) at strength s (1 + beta): here beta = 3, s = 0.0025, l1_ratio 0.25, strength 0.01."""
    torch.manual_seed(0)
    net = trainlab.create_model("mlp", in_features=6, num_classes=3, widths=(5,)).double()
    model = MLP([6, 5, 3], dtype=np.float64)
    names = copy_weights(net, model)
    value = torch_penalty(name, torch_strength, **torch_options)(net)
    value.backward()
    scratch_value, grads = create_penalty(name, 0.01, **scratch_options)(model.params)
    assert scratch_value == pytest.approx(value.item(), rel=RTOL)
    assert set(grads) == {"0.W", "2.W"}
    for (_, p), key in zip(net.named_parameters(), names):
        if p.dim() == 2:
            assert_close(grads[key], to_numpy(p.grad).T)
        else:  # biases: not in the penalty, so no gradient on either side
            assert p.grad is None and key not in grads


@pytest.mark.parametrize(
    "scratch,torch_opt",
    [
        (lambda p: SGD(p, 0.1), lambda p: torch.optim.SGD(p, 0.1)),
        (lambda p: Momentum(p, 0.1, 0.9), lambda p: torch.optim.SGD(p, 0.1, momentum=0.9)),
        (lambda p: Nesterov(p, 0.1, 0.9), lambda p: torch.optim.SGD(p, 0.1, momentum=0.9, nesterov=True)),
        (lambda p: Adam(p, 0.01), lambda p: torch.optim.Adam(p, 0.01)),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_optimizers_match_torch_optim(scratch, torch_opt):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3))
    params = {"w": w.copy()}
    tw = torch.tensor(w, requires_grad=True)
    opt, topt = scratch(params), torch_opt([tw])
    for _ in range(20):
        g = rng.standard_normal((4, 3))
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step({"w": g})
    assert_close(params["w"], to_numpy(tw))


def test_sgd_training_matches_torch_mlp_after_200_steps():
    """The same initial weights, the same batches (fit's documented order: np.random.default_rng(seed)
    draws a permutation per epoch) and plain SGD, in float64: the weights agree to 1e-8 after 200 steps."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((160, 20)), rng.integers(0, 4, 160)
    torch.manual_seed(0)
    net = trainlab.create_model("mlp", in_features=20, num_classes=4, widths=(16, 8)).double()
    model = MLP([20, 16, 8, 4], dtype=np.float64)
    names = copy_weights(net, model)
    initial = {name: p.copy() for name, p in model.params.items()}
    batch_size, epochs, seed = 32, 40, 7  # 5 steps per epoch, 200 steps
    fit(model, SGD(model.params, lr=0.1), X, y, epochs=epochs, batch_size=batch_size, seed=seed)

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    order_rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(epochs):
        order = order_rng.permutation(len(X))
        for begin in range(0, len(X), batch_size):
            batch = torch.from_numpy(order[begin : begin + batch_size])
            opt.zero_grad()
            F.cross_entropy(net(torch.from_numpy(X)[batch]), torch.from_numpy(y)[batch]).backward()
            opt.step()
            steps += 1
    assert steps == 200
    for (_, p), name in zip(net.named_parameters(), names):
        assert_close(model.params[name], to_numpy(p).T if p.dim() == 2 else to_numpy(p), rtol=0, atol=1e-8)
        assert np.abs(model.params[name] - initial[name]).max() > 1e-3  # it did train
