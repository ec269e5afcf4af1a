"""The NumPy engine's layers, initialisers, losses, penalties, optimisers, models and training loop: what
each computes, its conventions (dropout's two, batch norm's running statistics), dtypes and errors."""

import math

import numpy as np
import pytest

from trainlab.errors import ConfigError, TrainlabError
from trainlab.nn.activations import ACTIVATIONS
from trainlab.scratch.init import create_init, list_inits
from trainlab.scratch.layers import Activation, Affine, BatchNorm, Dropout, Flatten, Maxout, PReLU
from trainlab.scratch.losses import (
    create_loss,
    create_penalty,
    l1,
    multiclass_svm,
    softmax_cross_entropy,
)
from trainlab.scratch.model import MLP, Sequential
from trainlab.scratch.optim import SGD, Adam, Momentum, create_optimizer
from trainlab.scratch.train import evaluate, fit

F32_EPS = float(np.finfo(np.float32).eps)


def activation_input(name: str, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((4, 6, 3)).astype(np.float32)  # 6 channels: maxout's k = 2 pieces of 3


def test_affine_is_x_dot_w_plus_b_and_reads_images_as_vectors():
    rng = np.random.default_rng(0)
    layer = Affine(12, 5, rng=rng)
    layer.params["b"][...] = rng.standard_normal(5)
    x = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, x.reshape(3, 12).dot(layer.params["W"]) + layer.params["b"])
    dout = rng.standard_normal((3, 5)).astype(np.float32)
    dx = layer.backward(dout)
    assert dx.shape == x.shape and layer.params["W"].shape == layer.grads["W"].shape == (12, 5)
    np.testing.assert_array_equal(layer.grads["W"], x.reshape(3, 12).T.dot(dout))
    np.testing.assert_array_equal(layer.grads["b"], dout.sum(0))


@pytest.mark.parametrize("name", ACTIVATIONS.list())
def test_every_activation_keeps_float32_and_shapes(name):
    rng = np.random.default_rng(0)
    layer = Activation(name)
    x = activation_input(name, rng)
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    assert out.dtype == dx.dtype == np.float32 and dx.shape == x.shape
    assert out.shape == ((4, 3, 3) if name == "maxout" else x.shape)
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_activation_layers_are_built_by_name_with_their_options():
    assert (
        isinstance(Activation("prelu", num_parameters=3), PReLU)
        and Activation("prelu").params["a"][0] == 0.25
    )
    assert isinstance(Activation("maxout", k=3), Maxout) and isinstance(Activation("maxout"), Activation)
    leaky = Activation("leaky_relu", slope=0.1)
    np.testing.assert_allclose(leaky.forward(np.array([-2.0, 3.0])), [-0.2, 3.0])
    np.testing.assert_allclose(leaky.backward(np.ones(2)), [0.1, 1.0])
    with pytest.raises(ConfigError, match="did you mean 'relu'"):
        Activation("rleu")
    with pytest.raises(ConfigError, match="slope"):
        Activation("leaky_relu", slop=0.1)
    with pytest.raises(ConfigError, match="approximate='tan'"):
        Activation("gelu", approximate="tan")
    with pytest.raises(ConfigError, match="num_parameters"):
        Activation("prelu", num_parameter=3)
    with pytest.raises(ConfigError, match="k=1"):
        Activation("maxout", k=1)
    with pytest.raises(TrainlabError, match="k \\* C"):
        Activation("maxout", k=2).forward(np.zeros((2, 5)))


def test_maxout_takes_the_max_of_piece_major_pieces():
    """x (N, k * C): piece p of unit c is column p * C + c, as torch's Maxout unflattens (k, C)."""
    x = np.array([[1.0, 5.0, 3.0, 2.0, 4.0, 0.0]])  # k = 2, C = 3: pieces (1, 2), (5, 4), (3, 0)
    layer = Maxout(k=2)
    np.testing.assert_array_equal(layer.forward(x), [[2.0, 5.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[10.0, 20.0, 30.0]])), [[0, 20, 30, 10, 0, 0]])


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_conventions_keep_the_expected_output(p):
    """inverted: train x m / (1 - p), eval x; test_scale: train x m, eval x (1 - p). On x = 1 the train
    output's mean estimates the eval output; n = 200000 units put 6 standard errors under 0.02."""
    n = 200_000
    x = np.ones(n, np.float32)
    for mode, kept_value, eval_value in [("inverted", 1 / (1 - p), 1.0), ("test_scale", 1.0, 1 - p)]:
        layer = Dropout(p, mode, rng=np.random.default_rng(0))
        out = layer.forward(x, train=True)
        assert set(np.unique(out)) <= {0.0, np.float32(kept_value)} and out.dtype == np.float32
        kept = np.count_nonzero(out) / n
        assert abs(kept - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
        assert abs(out.mean() - eval_value) < 6 * kept_value * math.sqrt(p * (1 - p) / n)
        np.testing.assert_array_equal(layer.backward(x), out)  # the same mask routes the gradient
        np.testing.assert_allclose(layer.forward(x, train=False), eval_value)
        np.testing.assert_allclose(layer.backward(x), eval_value)
    same = Dropout(p, rng=np.random.default_rng(3)).forward(x[:100])
    np.testing.assert_array_equal(same, Dropout(p, rng=np.random.default_rng(3)).forward(x[:100]))
    with pytest.raises(ConfigError, match="0 <= p < 1"):
        Dropout(1.0)
    with pytest.raises(ConfigError, match="test_scale"):
        Dropout(0.5, mode="scaled")


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 5)])
def test_batchnorm_normalises_and_keeps_running_statistics(shape):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(shape) + 2).astype(np.float64)
    bn = BatchNorm(3, momentum=0.1, dtype=np.float64)
    out = bn.forward(x, train=True)
    axes = (0, *range(2, len(shape)))
    n = x.size // 3
    np.testing.assert_allclose(out.mean(axes), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axes), x.var(axes) / (x.var(axes) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.1 * x.mean(axes), rtol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.9 + 0.1 * x.var(axes) * n / (n - 1), rtol=1e-12)
    view = (1, 3) + (1,) * (len(shape) - 2)
    expected = (x - bn.buffers["running_mean"].reshape(view)) / np.sqrt(
        bn.buffers["running_var"].reshape(view) + 1e-5
    )
    np.testing.assert_allclose(bn.forward(x, train=False), expected, rtol=1e-12)
    with pytest.raises(TrainlabError, match="more than 1 value per channel"):
        bn.forward(np.ones(view), train=True)


def test_flatten_round_trips():
    x = np.arange(24.0).reshape(2, 3, 4)
    layer = Flatten()
    assert layer.forward(x).shape == (2, 12)
    np.testing.assert_array_equal(layer.backward(layer.forward(x)), x)


@pytest.mark.parametrize(
    "name,std",
    [("zeros", 0.0), ("small_random", 0.01), ("xavier", math.sqrt(2 / 768)), ("he", math.sqrt(2 / 512))],
)
def test_initialisers_have_the_formula_std_and_repeat_with_a_seed(name, std):
    """(512, 256) draws: the sample std is within 5 standard errors (std / sqrt(2 n)) of the formula's."""
    w = create_init(name, (512, 256), rng=0, dtype=np.float64)
    assert abs(w.std() - std) <= 5 * std / math.sqrt(2 * w.size)
    np.testing.assert_array_equal(w, create_init(name, (512, 256), rng=0, dtype=np.float64))
    np.testing.assert_array_equal(create_init(name, (512, 256), rng=0), w.astype(np.float32))


def test_init_conv_fans_and_unknown_name():
    w = create_init("he", (64, 32, 3, 3), rng=0, dtype=np.float64)  # fan_in = 32 * 3 * 3
    assert abs(w.std() - math.sqrt(2 / 288)) <= 5 * math.sqrt(2 / 288) / math.sqrt(2 * w.size)
    assert create_init("kaiming_normal", (3, 2), rng=1).shape == (3, 2)
    with pytest.raises(ConfigError, match="expected one of: he, small_random, xavier, zeros"):
        create_init("glorot_uniformish", (3, 3))
    assert list_inits() == ["he", "small_random", "xavier", "zeros"]


def test_svm_loss_is_the_lectures_worked_example():
    """cs231n lecture 3: cat, car and frog images with scores (3.2, 5.1, -1.7), (1.3, 4.9, 2.0) and
    (2.2, 2.5, -3.1) have hinge losses 2.9, 0 and 12.9, and L = 5.27 (to 2 decimals)."""
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    loss, dscores = multiclass_svm(scores, np.array([0, 1, 2]))
    assert loss == pytest.approx((2.9 + 0 + 12.9) / 3)
    np.testing.assert_allclose(dscores * 3, [[-1, 1, 0], [0, 0, 0], [1, 1, -2]])


def test_softmax_cross_entropy_of_equal_scores_is_log_c():
    loss, dscores = softmax_cross_entropy(np.zeros((4, 10)), np.arange(4))
    assert loss == pytest.approx(math.log(10))
    np.testing.assert_allclose(dscores.sum(1), 0, atol=1e-15)
    with pytest.raises(TrainlabError, match="do not match"):
        softmax_cross_entropy(np.zeros((4, 10)), np.arange(3))
    with pytest.raises(ConfigError, match="did you mean 'mse'"):
        create_loss("mse_")


def test_penalties_apply_to_weights_only():
    params = {
        "0.W": np.array([[1.0, -2.0]]),
        "0.b": np.array([5.0]),
        "1.gamma": np.ones(2),
        "W": np.array([-3.0]),
    }
    value, grads = l1(params, 0.5)
    assert value == pytest.approx(0.5 * 6) and set(grads) == {"0.W", "W"}
    np.testing.assert_array_equal(grads["0.W"], [[0.5, -0.5]])
    value, grads = create_penalty("l2", 0.1)(params)
    assert value == pytest.approx(0.1 * 14)
    np.testing.assert_allclose(grads["W"], [-0.6])
    with pytest.raises(ConfigError, match="l1_ratio"):
        create_penalty("elastic_net", 0.1, l1_ratoi=0.5)
    with pytest.raises(ConfigError, match="l1_ratio=2"):
        create_penalty("elastic_net", 0.1, l1_ratio=2)(params)


def test_sequential_names_params_and_grads_and_shares_the_arrays():
    model = MLP([6, 5, 4, 3], act="relu", seed=0)
    assert list(model.params) == ["0.W", "0.b", "2.W", "2.b", "4.W", "4.b"]
    assert model.params["0.W"] is model.layers[0].params["W"]
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 6)).astype(np.float32), rng.integers(0, 3, 7)
    loss, grads = model.gradients(X, y)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in model.params.items()}
    assert all(g.dtype == np.float32 for g in grads.values())
    assert loss == pytest.approx(model.loss_value(X, y, train=True))
    assert model.predict(X).shape == (7,) and set(model.predict(X)) <= {0, 1, 2}
    SGD(model.params, lr=0.5).step(grads)  # in place: the model now computes something else
    assert model.loss_value(X, y) != pytest.approx(loss, rel=1e-3)


def test_mlp_layouts_with_dropout_maxout_and_a_penalty():
    dropout = MLP([4, 3, 2], dropout=0.5, seed=0)
    assert [type(layer).__name__ for layer in dropout.layers] == ["Affine", "Activation", "Dropout", "Affine"]
    maxout = MLP([4, 3, 2], act={"name": "maxout", "k": 3})
    assert maxout.params["0.W"].shape == (4, 9) and maxout.params["2.W"].shape == (3, 2)
    assert MLP([4, 3, 2], seed=1).params["0.W"].tolist() != MLP([4, 3, 2], seed=2).params["0.W"].tolist()
    penalised = MLP([4, 3, 2], seed=0, penalty=create_penalty("l2", 1.0))
    plain = MLP([4, 3, 2], seed=0)
    X, y = np.ones((2, 4), np.float32), np.array([0, 1])
    (loss, grads), (plain_loss, plain_grads) = penalised.gradients(X, y), plain.gradients(X, y)
    weight_sum = sum(float(np.sum(np.square(p))) for k, p in plain.params.items() if k.endswith("W"))
    assert loss == pytest.approx(plain_loss + weight_sum, rel=1e-6)
    np.testing.assert_allclose(grads["0.W"], plain_grads["0.W"] + 2 * plain.params["0.W"], rtol=1e-6)
    np.testing.assert_array_equal(grads["0.b"], plain_grads["0.b"])
    with pytest.raises(ConfigError, match="sizes"):
        MLP([4])


def test_optimizers_update_in_place_and_check_options():
    w = np.ones(3, np.float32)
    params = {"w": w}
    Momentum(params, lr=0.1, momentum=0.5).step({"w": np.ones(3, np.float32)})
    assert params["w"] is w and w.dtype == np.float32
    np.testing.assert_allclose(w, 0.9)
    adam = Adam(params, lr=0.01)
    adam.step({"w": np.full(3, 5.0, np.float32)})
    np.testing.assert_allclose(w, 0.89, rtol=1e-6)  # Adam's first step moves every weight by lr
    with pytest.raises(ConfigError, match="momentum=1.5"):
        Momentum(params, lr=0.1, momentum=1.5)
    with pytest.raises(ConfigError, match="did you mean 'adam'"):
        create_optimizer("adma", params)
    with pytest.raises(ConfigError, match="bad options"):
        create_optimizer("sgd", params, lr=0.1, momentum=0.9)


def separable_blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return (centres[y] + rng.standard_normal((n, 2))).astype(np.float32), y


def test_fit_learns_and_repeats_with_a_seed():
    X, y = separable_blobs()

    def run(seed):
        model = MLP([2, 16, 3], seed=0)
        history = fit(
            model, SGD(model.params, lr=0.1), X, y, epochs=5, batch_size=32, seed=seed, X_val=X, y_val=y
        )
        return model, history

    model, history = run(seed=1)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["val_accuracy"] > 0.95
    assert all(p.dtype == np.float32 for p in model.params.values())
    again, _ = run(seed=1)
    other, _ = run(seed=2)
    np.testing.assert_array_equal(model.params["0.W"], again.params["0.W"])
    assert not np.array_equal(model.params["0.W"], other.params["0.W"])  # another batch order
    assert evaluate(model, X, y)["accuracy"] == history[-1]["val_accuracy"]


def test_fit_trains_in_the_data_dtype_and_calls_on_epoch():
    X, y = separable_blobs(64)
    model = MLP([2, 4, 3], dtype=np.float32)
    rows = []
    fit(model, SGD(model.params, 0.1), X.astype(np.float64), y, epochs=2, batch_size=20, on_epoch=rows.append)
    assert model.dtype == np.float64 and len(rows) == 2
    with pytest.raises(TrainlabError, match="optimizer does not hold model.params"):
        fit(model, SGD(dict(model.params), 0.1), X, y, epochs=1, batch_size=20)


def test_sequential_of_hand_built_layers_with_batchnorm():
    rng = np.random.default_rng(0)
    model = Sequential([Affine(2, 8, rng=rng), BatchNorm(8), Activation("relu"), Affine(8, 3, rng=rng)])
    assert list(model.buffers) == ["1.running_mean", "1.running_var"]
    X, y = separable_blobs(90)
    fit(model, Momentum(model.params, 0.05), X, y, epochs=10, batch_size=30)  # 30 steps: 0.9^30 = 4%
    assert evaluate(model, X, y)["accuracy"] > 0.9  # eval mode: the running statistics normalise
    assert not np.array_equal(model.buffers["1.running_mean"], np.zeros(8))
