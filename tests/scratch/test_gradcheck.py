"""Every layer, loss and penalty of the NumPy engine, gradient-checked by centred differences in float64 on
random shapes (hypothesis), every activation of trainlab's registry included.

Inputs are drawn away from the kinks, where the left and right slopes differ and no analytic gradient
can match a difference quotient across them: ReLU-like units at 0 (and relu6 at 6), ties between maxout
pieces, SVM margins at 0 and L1 weights at 0 are all kept at least 1e-2 away, four orders of magnitude
beyond the perturbation eps = 1e-6.

Why 1e-7: the centred difference has truncation error eps^2 |f'''| / 6 ~ 1e-12 and rounding error about
1e-16 |L| / eps ~ 1e-10 |L| for the O(1) losses here, so a correct backward scores 1e-9 or below against
the gradient's scale, and a wrong one (a missing term, a factor, a transpose) scores 1e-2 or more.
"""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.nn.activations import ACTIVATIONS
from trainlab.scratch.gradcheck import gradient_check, numerical_gradient, relative_error
from trainlab.scratch.layers import Activation, Affine, BatchNorm, Dropout, Flatten
from trainlab.scratch.losses import (
    create_penalty,
    mse,
    multiclass_svm,
    sigmoid_cross_entropy,
    softmax_cross_entropy,
)
from trainlab.scratch.model import MLP, Sequential

TOL = 1e-7
KINKS = (0.0, 6.0)  # relu, leaky_relu, prelu, elu (second derivative), relu6 at 0; relu6 at 6
AWAY = 1e-2
# In a model the perturbed entry moves a pre-activation or a margin by about eps |x| ~ 1e-6; draws that put
# one within 1e-4 of a kink (a few percent of them) are skipped.
MODEL_AWAY = 1e-4
# |x| <= 3: there every derivative is at least 1e-2 of the function's scale. Deep in a saturated tail
# (tanh'(8) ~ 5e-7) it falls below the difference quotient's rounding floor, 1e-16 |f| / eps ~ 1e-10, and
# no finite difference can check it. relu6 is drawn wider, to cross its kink at 6 (its tail is exactly flat).
SPAN = {"relu6": 8}
CASES = settings(max_examples=12, deadline=None)
seeds = st.integers(0, 2**32 - 1)

# every registered activation with default options, then the non-default options worth covering
VARIANTS = [(name, {}) for name in ACTIVATIONS.list()] + [
    ("leaky_relu", {"slope": 0.1}),
    ("elu", {"alpha": 0.5}),
    ("swish", {"beta": 2.0}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 3.0}),
    ("prelu", {"num_parameters": 3, "init": 0.1}),
    ("maxout", {"k": 3}),
]


def away_from_kinks(x: np.ndarray) -> np.ndarray:
    for kink in KINKS:
        near = np.abs(x - kink) < AWAY
        x = np.where(near, kink + np.where(x >= kink, AWAY, -AWAY), x)
    return x


def separated_pieces(rng: np.random.Generator, n: int, k: int, c: int, extra: tuple = ()) -> np.ndarray:
    """(n, k * c, *extra) maxout input whose k pieces per unit differ by at least 0.3: no ties."""
    offsets = 0.4 * rng.permuted(np.tile(np.arange(k, dtype=float), (n, c, *extra, 1)), axis=-1)
    noise = rng.uniform(-0.05, 0.05, offsets.shape)
    pieces = offsets + noise + rng.standard_normal((n, c, *extra, 1))  # (n, c, *extra, k)
    return np.moveaxis(pieces, -1, 1).reshape(n, k * c, *extra)


def assert_all_small(errors: dict[str, float]) -> None:
    assert errors, "nothing was checked"
    bad = {name: e for name, e in errors.items() if not e < TOL}
    assert not bad, f"relative errors over {TOL}: {bad}"


def check_loss(loss_fn, scores: np.ndarray, target: np.ndarray) -> None:
    """The loss's dL/dscores against centred differences of its value."""
    _, analytic = loss_fn(scores, target)
    numerical = numerical_gradient(lambda: loss_fn(scores, target)[0], scores, 1e-6, np.arange(scores.size))
    assert relative_error(analytic.reshape(-1), numerical) < TOL


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
@CASES
@given(n=st.integers(1, 4), c=st.integers(1, 5), spatial=st.booleans(), seed=seeds)
def test_every_activation(name, options, n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    extra = (2, 2) if spatial else ()
    if name == "prelu" and options:
        c = options["num_parameters"]  # one slope per channel
    if name == "maxout":
        x = separated_pieces(rng, n, options.get("k", 2), c, extra)
    else:
        x = away_from_kinks(rng.uniform(-SPAN.get(name, 3), SPAN.get(name, 3), (n, c, *extra)))
    layer = Activation(name, **options)
    if name == "prelu":
        layer.params["a"] = rng.uniform(0.05, 0.5, layer.params["a"].shape)
    assert_all_small(gradient_check(layer, x, seed=seed))


@CASES
@given(n=st.integers(1, 5), fan_in=st.integers(1, 7), fan_out=st.integers(1, 6), seed=seeds)
def test_affine(n, fan_in, fan_out, seed):
    rng = np.random.default_rng(seed)
    layer = Affine(fan_in, fan_out, rng=rng)
    layer.params["b"] = rng.standard_normal(fan_out).astype(np.float32)
    errors = gradient_check(layer, rng.standard_normal((n, fan_in)), seed=seed)
    assert_all_small(errors)
    assert set(errors) == {"W", "b", "x"}


@CASES
@given(
    n=st.integers(1, 3), shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)), seed=seeds
)
def test_affine_and_flatten_on_images(n, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape))
    assert_all_small(gradient_check(Affine(int(np.prod(shape)), 3, rng=rng), x, seed=seed))
    assert_all_small(gradient_check(Flatten(), x, seed=seed))


@pytest.mark.parametrize("mode", ["inverted", "test_scale"])
@pytest.mark.parametrize("train", [True, False])
@CASES
@given(n=st.integers(1, 5), d=st.integers(1, 6), seed=seeds)
def test_dropout(mode, train, n, d, seed):
    """The mask is fixed during the check (the layer's rng is replayed), so train mode has a gradient."""
    rng = np.random.default_rng(seed)
    layer = Dropout(0.4, mode, rng=np.random.default_rng(seed))
    assert_all_small(gradient_check(layer, rng.standard_normal((n, d)), train=train, seed=seed))


@pytest.mark.parametrize("train", [True, False])
@CASES
@given(n=st.integers(3, 6), c=st.integers(1, 4), spatial=st.booleans(), seed=seeds)
def test_batchnorm(train, n, c, spatial, seed):
    """At least 3 values per channel: two are normalised to -1 and +1 whatever they are, so the output does
    not depend on x (a gradient of order eps / var, at the rounding floor)."""
    rng = np.random.default_rng(seed)
    layer = BatchNorm(c)
    layer.params = {"gamma": rng.uniform(0.5, 2, c), "beta": rng.standard_normal(c)}
    layer.buffers = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2, c)}
    x = 2 * rng.standard_normal((n, c, 3, 2) if spatial else (n, c)) + 1
    assert_all_small(gradient_check(layer, x, train=train, seed=seed))


@CASES
@given(n=st.integers(1, 6), classes=st.integers(2, 6), seed=seeds)
def test_softmax_cross_entropy_and_svm(n, classes, seed):
    rng = np.random.default_rng(seed)
    scores, y = 2 * rng.standard_normal((n, classes)), rng.integers(0, classes, n)
    check_loss(softmax_cross_entropy, scores, y)
    margins = scores - scores[np.arange(n), y][:, None] + 1.0
    scores += np.where(np.abs(margins) < AWAY, 2 * AWAY, 0.0)  # move a score off its hinge
    check_loss(multiclass_svm, scores, y)


@CASES
@given(n=st.integers(1, 6), k=st.integers(1, 4), seed=seeds)
def test_sigmoid_cross_entropy_and_mse(n, k, seed):
    rng = np.random.default_rng(seed)
    check_loss(sigmoid_cross_entropy, 3 * rng.standard_normal((n, 1)), rng.integers(0, 2, n))
    check_loss(mse, rng.standard_normal((n, k)), rng.standard_normal((n, k)))


@pytest.mark.parametrize(
    "penalty", [("l2", {}), ("l1", {}), ("elastic_net", {"l1_ratio": 0.3})], ids=lambda p: p[0]
)
@CASES
@given(seed=seeds)
def test_penalties_in_a_model_with_svm_loss(penalty, seed):
    """The decks' L = data loss + lambda R(W), with the SVM data loss: gradients of both terms."""
    rng = np.random.default_rng(seed)
    name, options = penalty
    model = MLP(
        [4, 5, 3], act="tanh", seed=seed, loss="multiclass_svm", penalty=create_penalty(name, 0.1, **options)
    )
    for key, p in model.params.items():  # L1 weights away from |W|'s kink at 0
        p[...] = np.where(np.abs(p) < AWAY, AWAY, p) if key.endswith("W") else rng.standard_normal(p.shape)
    X, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    scores = model.forward(X)
    margins = scores - scores[np.arange(5), y][:, None] + 1.0
    margins[np.arange(5), y] = 1.0
    if np.abs(margins).min() < MODEL_AWAY:  # a hinge within reach of the perturbation: skip this draw
        return
    # the hinges can cancel: no active margin, or two that offset, leave the last bias a zero gradient,
    # and a zero has no scale to be relative to (the difference quotient's noise / 1e-8 ~ 1e-2)
    _, grads = copy.deepcopy(model).astype(np.float64).gradients(X, y)
    if np.abs(grads["2.b"]).max() < 1e-6:
        return
    assert_all_small(gradient_check(model, X, y, seed=seed))


@pytest.mark.parametrize("act", ["relu", "tanh", "maxout", "prelu"])
@CASES
@given(n=st.integers(3, 5), seed=seeds)
def test_models_with_dropout_and_batchnorm(act, n, seed):
    """Whole models in train mode: an MLP with dropout (the mask replayed), and Affine -> BatchNorm (at
    least 3 values per channel, see above)."""
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, 4)), rng.integers(0, 3, n)
    with_dropout = MLP([4, 6, 3], act=act, seed=seed, dropout=0.3)
    hidden = with_dropout.layers[0].forward(X.astype(np.float32))
    if act in ("relu", "prelu") and np.abs(hidden).min() < MODEL_AWAY:  # a unit at its kink: skip this draw
        return
    assert_all_small(gradient_check(with_dropout, X, y, seed=seed))

    width = 3 if act == "maxout" else 6  # maxout's k = 2 pieces per unit
    bn = Sequential([Affine(4, 6, rng=rng), BatchNorm(6), Activation(act), Affine(width, 3, rng=rng)])
    if act in ("relu", "prelu") and np.abs(bn.layers[1].forward(bn.layers[0].forward(X))).min() < MODEL_AWAY:
        return
    errors = gradient_check(bn, X, y, seed=seed)
    # batch norm subtracts the batch mean, so the bias before it has no effect and a zero gradient:
    # there both sides are rounding noise, and the check is that the analytic one is 0
    assert abs(bn.astype(np.float64).gradients(X, y)[1]["0.b"]).max() < 1e-12
    assert_all_small({k: e for k, e in errors.items() if k != "0.b"})


def test_a_wrong_backward_is_caught():
    """The check has teeth: a backward that drops b's gradient, or doubles dx, scores far above 1e-7."""

    class NoBiasGrad(Affine):
        def backward_params(self, dout):
            super().backward_params(dout)
            self.grads["b"] = 0 * self.grads["b"]

    class DoubleDx(Affine):
        def backward(self, dout):
            return 2 * super().backward(dout)

    x = np.random.default_rng(0).standard_normal((4, 3))
    assert gradient_check(NoBiasGrad(3, 2, rng=0), x)["b"] > 0.1
    assert gradient_check(DoubleDx(3, 2, rng=0), x)["x"] > 0.1
    assert gradient_check(DoubleDx(3, 2, rng=0), x)["W"] < TOL


def test_gradient_check_leaves_the_model_alone_and_samples_entries():
    model = MLP([5, 4, 3], seed=0, dropout=0.5)
    before = {k: v.copy() for k, v in model.params.items()}
    state = model.layers[2].rng.bit_generator.state
    rng = np.random.default_rng(1)
    errors = gradient_check(model, rng.standard_normal((3, 5)), rng.integers(0, 3, 3), samples=4)
    assert set(errors) == set(model.params)
    assert all(
        np.array_equal(model.params[k], before[k]) and model.params[k].dtype == np.float32 for k in before
    )
    assert model.layers[2].rng.bit_generator.state == state
