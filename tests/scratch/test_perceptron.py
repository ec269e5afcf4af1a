"""The first lecture's neuron: the perceptron converges on linearly separable data and fails on XOR, the
logistic unit likewise, and a 2-2-1 MLP trained by backpropagation learns XOR."""

import numpy as np
import pytest

from trainlab.errors import TrainlabError
from trainlab.scratch.model import MLP
from trainlab.scratch.optim import SGD
from trainlab.scratch.perceptron import LogisticUnit, Perceptron
from trainlab.scratch.train import fit

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0, 1, 1, 0])


def separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on either side of the line x_1 + 2 x_2 = 1, none within 0.1 of it (a margin, so the
    perceptron convergence theorem bounds the number of mistakes)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (4 * n, 2))
    side = X @ np.array([1.0, 2.0]) - 1.0
    keep = np.abs(side) > 0.1 * np.sqrt(5)
    return X[keep][:n], (side[keep][:n] > 0).astype(np.int64)


def test_perceptron_converges_on_separable_data():
    X, y = separable()
    unit = Perceptron(2)
    errors = unit.fit(X, y, epochs=100)
    assert errors[0] > 0 and errors[-1] == 0
    first_clean = errors.index(0)
    assert all(e == 0 for e in errors[first_clean:])  # once right, no more updates
    np.testing.assert_array_equal(unit.predict(X), y)


def test_perceptron_fails_on_xor():
    """No line separates XOR, so every epoch misclassifies at least one of the four points."""
    unit = Perceptron(2)
    errors = unit.fit(XOR_X, XOR_Y, epochs=200)
    assert min(errors) >= 1
    assert (unit.predict(XOR_X) == XOR_Y).sum() <= 3


def test_logistic_unit_separates_separable_data_but_not_xor():
    X, y = separable()
    unit = LogisticUnit(2, lr=0.5)
    losses = unit.fit(X, y, epochs=300)
    assert losses[-1] < 0.1 * losses[0]
    np.testing.assert_array_equal(unit.predict(X), y)
    assert np.all((unit.predict_proba(X) > 0.5) == y.astype(bool))
    xor = LogisticUnit(2, lr=0.5)
    xor_losses = xor.fit(XOR_X, XOR_Y, epochs=300)
    assert xor_losses[-1] > 0.69  # stuck near log 2: a linear unit cannot do better than chance on XOR
    assert (xor.predict(XOR_X) == XOR_Y).sum() <= 3


def test_a_2_2_1_mlp_learns_xor():
    """Two sigmoid hidden units and one logistic output, by backpropagation. The 2-2-1 network has local
    minima (Hamey 1998), so some initialisations never get there: with these settings 18 of seeds 0-19
    do, seed 0 among them."""
    model = MLP(
        [2, 2, 1], act="sigmoid", init="xavier", loss="sigmoid_cross_entropy", seed=0, dtype=np.float64
    )
    history = fit(model, SGD(model.params, lr=1.0), XOR_X, XOR_Y, epochs=2000, batch_size=4)
    np.testing.assert_array_equal(model.predict(XOR_X), XOR_Y)
    assert history[-1]["train_loss"] < 0.05


def test_targets_must_be_binary():
    with pytest.raises(TrainlabError, match="0 or 1"):
        Perceptron(2).fit(XOR_X, np.array([0, 1, 2, 0]), epochs=1)
