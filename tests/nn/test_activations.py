"""Every registered activation: closed-form derivative vs autograd, extremes, metadata table, maxout."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.tolerance import EPS, assert_float32_close
from trainlab.errors import ConfigError
from trainlab.nn.activations import (
    ACTIVATIONS,
    Maxout,
    activation_gain,
    activation_table,
    create_activation,
    list_activations,
)

ELEMENTWISE = [name for name in ACTIVATIONS.list() if not ACTIVATIONS.meta(name).get("wraps_layer")]
VARIANTS = [(name, {}) for name in ELEMENTWISE] + [
    ("leaky_relu", {"slope": 0.1}),
    ("elu", {"alpha": 0.5}),
    ("swish", {"beta": 2.0}),
    ("gelu", {"approximate": "tanh"}),
    ("softplus", {"beta": 3.0}),
    ("prelu", {"num_parameters": 4, "init": 0.1}),
]


def autograd_derivative(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    act(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
def test_derivative_matches_autograd_on_dense_grid(name, options):
    act = create_activation(name, **options).double()
    grid = torch.cat([torch.linspace(-12, 12, 3997, dtype=torch.float64), torch.tensor([0.0, 6.0, -1e-9])])
    x = grid.view(-1, 4, 1)  # (1000, 4 channels, 1), with the kinks 0 and 6
    # float64 on both sides, so rounding is ~1e-16; they may still differ by a parameter held in float32
    # (relative float32 eps) and by torch's softplus, linear above beta * x = 20 (a gap below e^-20)
    torch.testing.assert_close(act.derivative(x), autograd_derivative(act, x), rtol=EPS, atol=math.exp(-20))


@pytest.mark.parametrize("name,options", VARIANTS, ids=lambda v: str(v))
def test_derivative_at_extremes_is_finite_and_matches(name, options):
    act = create_activation(name, **options)
    x = torch.tensor([-1e4, -1e3, -50.0, 50.0, 1e3, 1e4]).view(-1, 1).expand(-1, 4).contiguous()
    closed = act.derivative(x)
    assert torch.isfinite(act(x)).all() and torch.isfinite(closed).all()
    # a few (<= 8) rounded ops on terms of magnitude <= 1 here (saturated: 0, 1, slopes, 1 / (1 + |x|))
    assert_float32_close(closed, autograd_derivative(act, x), ops=8, scale=1.0)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_takes_numpy(name):
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    out = create_activation(name).derivative(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape


def test_maxout_k2_doubles_parameters_and_takes_max_of_pieces():
    layer = nn.Linear(20, 8)
    maxout = Maxout(layer, k=2)
    count = sum(p.numel() for p in layer.parameters())
    assert sum(p.numel() for p in maxout.parameters()) == 2 * count
    x = torch.randn(5, 20)
    z = maxout.layer(x).view(5, 2, 8)
    torch.testing.assert_close(maxout(x), torch.maximum(z[:, 0], z[:, 1]))
    conv = Maxout(nn.Conv2d(3, 16, 3, padding=1), k=3)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 16, 8, 8)
    assert sum(p.numel() for p in conv.parameters()) == 3 * (16 * 3 * 9 + 16)


def test_maxout_derivative_is_one_hot_on_winning_piece():
    pieces = torch.randn(3, 10, requires_grad=True)
    pieces.amax(0).sum().backward()
    torch.testing.assert_close(Maxout(nn.Linear(1, 1), k=3).derivative(pieces.detach()), pieces.grad)


def test_maxout_without_layer_is_a_config_error():
    with pytest.raises(ConfigError, match="maxout wraps a layer"):
        create_activation("maxout")


def test_create_from_name_config_and_module_and_bad_name():
    assert isinstance(create_activation({"name": "elu", "alpha": 0.3}), nn.Module)
    assert create_activation({"name": "elu", "alpha": 0.3}).alpha == 0.3
    module = nn.ReLU()
    assert create_activation(module) is module
    assert create_activation("silu").beta == 1.0
    with pytest.raises(ConfigError, match="did you mean 'relu'"):
        create_activation("rleu")
    with pytest.raises(ConfigError, match="leaky_relu"):
        create_activation("leaky_relu", slop=0.1)


def test_prelu_learns_per_channel_slopes():
    act = create_activation("prelu", num_parameters=3)
    x = -torch.ones(2, 3, 4, 4)
    act(x).sum().backward()
    assert act.weight.grad.shape == (3,) and (act.weight.grad != 0).all()


def test_table_has_a_row_per_activation_with_lecture_gradients():
    rows = {row["name"]: row for row in activation_table()}
    assert sorted(rows) == list_activations()
    assert rows["sigmoid"]["grad(0)"] == pytest.approx(0.25)
    saturated = math.exp(-10) / (1 + math.exp(-10)) ** 2  # sigmoid'(10): the gradient vanishes
    assert rows["sigmoid"]["grad(10)"] == pytest.approx(saturated, abs=5e-7)  # the table keeps 6 decimals
    assert rows["tanh"]["grad(-10)"] == pytest.approx(0, abs=1e-7) and rows["tanh"]["grad(0)"] == 1
    assert (rows["relu"]["grad(-10)"], rows["relu"]["grad(10)"]) == (0, 1)
    assert rows["leaky_relu"]["grad(-10)"] == pytest.approx(0.01)
    assert rows["relu"]["can_die"] and not rows["leaky_relu"]["can_die"]
    assert rows["tanh"]["zero_centred"] and not rows["sigmoid"]["zero_centred"]
    assert all(row["relative_cost"] > 0 for name, row in rows.items() if name != "identity")
    assert 0 <= rows["identity"]["relative_cost"] < 1  # returns its input: no kernel, may round to 0.00
    assert rows["relu"]["relative_cost"] == 1.0


def test_gain_values():
    assert activation_gain("relu") == pytest.approx(2**0.5)
    assert activation_gain("tanh") == pytest.approx(5 / 3)
    assert activation_gain("leaky_relu", 0.1) == pytest.approx((2 / 1.01) ** 0.5)
