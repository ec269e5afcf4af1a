"""`trainlab experiment backprop --quick`: its three measurements, and pieces of it that could come out
either way shown to do so (a wrong backward fails the gradient check; a linear net has no vanishing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainlab.cli import main
from trainlab.experiments.backprop import (
    FLOAT64_TOL,
    GRADCHECK_TOL,
    XOR,
    gradient_norms,
    layer_cases,
    xor_runs,
)
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.scratch.gradcheck import gradient_check
from trainlab.scratch.layers import Affine


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("backprop")
    assert main(["experiment", "backprop", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    return json.loads((out / "results.json").read_text()), out


def test_quick_run_is_supported_with_its_figure(result):
    r, out = result
    assert r["verdict"] == "supported", r["checks"]
    assert len(r["checks"]) == 6 and all(c["passed"] for c in r["checks"])
    assert (out / "backprop.png").read_bytes()[:4] == b"\x89PNG"


def test_the_table_covers_every_activation_and_layer_below_tolerance(result):
    table = result[0]["measured"]["gradient_check"]
    for name in FORMULAS.list():
        assert any(row.startswith(f"Activation {name}") for row in table), name
    for kind in (
        "Affine",
        "Dropout",
        "BatchNorm",
        "Conv2d",
        "MaxPool2d",
        "AvgPool2d",
        "Flatten",
        "SVM",
        "MSE",
    ):
        assert any(kind in row for row in table), kind
    for row, errors in table.items():
        assert "x" in errors or row.startswith("MLP"), row  # a layer's input gradient is checked too
        assert max(errors.values()) < GRADCHECK_TOL, row


def test_engine_and_torch_agree_and_sigmoid_vanishes(result):
    norms = result[0]["measured"]["gradient_norm_per_layer"]
    for act, d in norms.items():
        assert len(d["engine"]) == len(d["torch"]) == 11
        np.testing.assert_allclose(d["engine"], d["torch"], rtol=FLOAT64_TOL, atol=0, err_msg=act)
    sigmoid, relu = norms["sigmoid"]["engine"], norms["relu"]["engine"]
    assert sigmoid[0] / sigmoid[-1] < 1e-2 < relu[0] / relu[-1]


def test_perceptron_fails_xor_and_mlp_solves_it():
    runs = xor_runs(seeds=3, epochs=1000)
    assert runs["and_errors"][-1] == 0 and min(runs["xor_errors"]) >= 1
    assert any(runs["solved"])
    assert (runs["mlp"].predict(XOR[0]) == XOR[1]).all()


class DoubledAffine(Affine):
    """A wrong backward: dL/dW twice what it should be."""

    def backward_params(self, dout):
        super().backward_params(dout)
        self.grads["W"] = 2 * self.grads["W"]


def test_gradient_check_catches_a_wrong_backward():
    """The (a) check can fail: an Affine whose dL/dW is doubled scores far above 1e-7."""
    _, layer, x = layer_cases(np.random.default_rng(0))[0]
    assert gradient_check(layer, x)["W"] < GRADCHECK_TOL
    layer.__class__ = DoubledAffine
    assert gradient_check(layer, x)["W"] > 0.1  # |2a - a| / (|2a| + |a|) = 1/3


def test_relu_gradients_do_not_vanish():
    """The (b) check can fail: ReLU units with He init (no sigma' <= 1/4) keep the ratio near 1."""
    x = np.random.default_rng(0).standard_normal((32, 20))
    y = np.arange(32) % 10
    engine, reference = gradient_norms(x, y, "relu", "he", 16, 10, seed=0)
    np.testing.assert_allclose(engine, reference, rtol=FLOAT64_TOL, atol=0)
    assert engine[0] / engine[-1] > 1e-2
