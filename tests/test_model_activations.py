"""Every registered activation is a switch in the MLP and the default CNN, maxout included (it wraps
its layer and so multiplies that layer's parameters by k)."""

from __future__ import annotations

import pytest
import torch

from trainlab.models import create_model
from trainlab.nn.activations import ACTIVATIONS


def parameters(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("act", ACTIVATIONS.list())
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_every_activation_trains_a_step(name, act):
    model = create_model(name, act=act)
    out = model(torch.randn(4, 1, 28, 28))
    out.logsumexp(1).mean().backward()
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())


def test_maxout_multiplies_the_hidden_layers_parameters_by_k():
    relu, maxout = create_model("mlp", act="relu"), create_model("mlp", act={"name": "maxout", "k": 3})
    hidden = (784 * 100 + 100) + (100 * 50 + 50)  # the two hidden Linear layers of 784-100-50-10
    assert parameters(maxout) - parameters(relu) == 2 * hidden
