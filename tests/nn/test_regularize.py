"""Dropout conventions and channel dropout; penalty formulas; decoupled weight decay vs L2 under Adam."""

import pytest
import torch
from torch import nn

from tests.tolerance import EPS
from trainlab.errors import ConfigError
from trainlab.nn.norm import BatchNorm
from trainlab.nn.regularize import PENALTIES, Dropout, channel_dropout, create_penalty


@pytest.mark.parametrize("scale_at", ["train", "test"])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_both_dropout_conventions_have_training_expectation_equal_to_test_output(scale_at, p):
    torch.manual_seed(0)
    drop = Dropout(p, scale_at=scale_at)
    x = torch.linspace(0.5, 2, 50)
    samples = drop(x.expand(40000, -1))  # (40000, 50) independent masks
    expected = drop.eval()(x)
    torch.testing.assert_close(expected, x if scale_at == "train" else x * (1 - p))
    sem = samples.std(0) / 40000**0.5
    assert ((samples.mean(0) - expected).abs() < 5 * sem).all()  # E[train output] = test output
    dropped = (samples == 0).double().mean().item()  # 2M Bernoulli(p) draws: 5 standard errors
    assert dropped == pytest.approx(p, abs=5 * (p * (1 - p) / samples.numel()) ** 0.5)


def test_dropout_conventions_give_the_same_network_up_to_the_next_layer_scale():
    """Test-time scaling by (1 - p) and inverted scaling by 1 / (1 - p) differ by a constant factor only."""
    torch.manual_seed(1)
    x = torch.randn(8, 20)
    torch.manual_seed(2)
    inverted = Dropout(0.3)(x)
    torch.manual_seed(2)
    vanilla = Dropout(0.3, scale_at="test")(x)
    torch.testing.assert_close(inverted * 0.7, vanilla)


def test_channel_dropout_drops_whole_feature_maps():
    torch.manual_seed(0)
    drop = channel_dropout(0.5)
    y = drop(torch.ones(64, 16, 5, 5))
    per_map = y.flatten(2)
    assert ((per_map == 0).all(2) | (per_map == 2).all(2)).all()
    dropped = (per_map == 0).all(2).double().mean().item()  # 1024 Bernoulli(0.5) maps: 5 standard errors
    assert dropped == pytest.approx(0.5, abs=5 * (0.25 / per_map.shape[0] / per_map.shape[1]) ** 0.5)
    assert torch.equal(drop.eval()(y), y)


def test_dropout_rejects_bad_values():
    with pytest.raises(ConfigError, match="p=1"):
        Dropout(1)
    with pytest.raises(ConfigError, match="scale_at"):
        Dropout(0.5, scale_at="both")


def model_with_known_params() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 2), BatchNorm(2), nn.Conv1d(2, 2, 1))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1.5, 2.0, p.numel()).view_as(p) * (i + 1))
    return model


FORMULAS = {
    "none": lambda w: 0 * w.sum(),
    "l2": lambda w: (w**2).sum(),
    "l1": lambda w: w.abs().sum(),
    "elastic_net": lambda w: (0.5 * w**2 + w.abs()).sum(),
}


@pytest.mark.parametrize("name", PENALTIES.list())
@pytest.mark.parametrize("weights_only", [True, False])
def test_penalty_matches_the_lecture_formula_on_the_right_parameters(name, weights_only):
    model = model_with_known_params()
    options = {"beta": 0.5} if name == "elastic_net" else {}
    penalty = create_penalty(name, 0.01, weights_only=weights_only, **options)
    selected = [model[0].weight, model[2].weight]
    if not weights_only:
        selected += [model[0].bias, model[1].weight, model[1].bias, model[2].bias]
    expected = 0.01 * sum(FORMULAS[name](p.detach()) for p in selected)
    torch.testing.assert_close(penalty(model), torch.as_tensor(expected, dtype=torch.float32))


def test_l2_gradient_is_2_strength_w_and_skips_biases_and_norm_params():
    model = model_with_known_params()
    create_penalty("l2", 0.1)(model).backward()
    torch.testing.assert_close(model[0].weight.grad, 0.2 * model[0].weight.detach())
    assert model[0].bias.grad is None and model[1].weight.grad is None


def test_bad_penalty_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'l2'"):
        create_penalty("l3", 0.1)
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        create_penalty("elastic_net", 0.1, bta=1.0)
    with pytest.raises(ConfigError, match="strength"):
        create_penalty("l2", -1.0)


def train_weights(optimizer: str, strength: float, weight_decay: float, steps: int = 20) -> torch.Tensor:
    """Two weights: w[0] gets a large data gradient (10), w[1] none. Returns them after `steps`."""
    w = nn.Parameter(torch.ones(1, 2))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer](
        [w], lr=0.01, weight_decay=weight_decay
    )
    holder = nn.Module()
    holder.w = w
    penalty = create_penalty("l2", strength)
    for _ in range(steps):
        loss = (w * torch.tensor([[10.0, 0.0]])).sum() + penalty(holder)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()[0]


def test_l2_in_the_loss_is_weight_decay_under_sgd():
    torch.testing.assert_close(train_weights("sgd", 0.05, 0.0), train_weights("sgd", 0.0, 0.1))


def test_adam_l2_in_the_loss_differs_from_decoupled_weight_decay():
    """AdamW shrinks both weights alike (lr * wd * w per step). L2 in the loss under Adam is divided by
    sqrt(v): the weight without data gradient moves by ~lr per step, the one with a large gradient barely."""
    steps, lr = 20, 0.01
    free = train_weights("adam", 0.0, 0.0)
    shrink_l2 = free - train_weights("adam", 0.005, 0.0)
    shrink_adamw = free - train_weights("adamw", 0.0, 0.01)
    # AdamW removes lr * wd * w per step, so shrinks in proportion to the sum of w over the steps: w[0]
    # falls by lr a step (Adam's step for a constant gradient), w[1] stays 1. Up to second order in
    # steps * lr * wd (2e-3) and the float32 rounding of 2 runs of 20 steps on weights <= 1 (40 eps),
    # relative to the shrink
    in_proportion = sum(1 - lr * t for t in range(steps)) / steps  # 0.905
    rel = steps * lr * 0.01 + 2 * steps * EPS / shrink_adamw[1].item()
    assert (shrink_adamw[0] / shrink_adamw[1]).item() == pytest.approx(in_proportion, rel=rel)
    # The weight with a large gradient gets no regularisation at all: the penalty changes its gradient
    # (10) by 2 * 0.005 * w, which changes Adam's step lr * g / |g| only as g varies over the run
    # (by 2 * 0.005 * 0.2 / 10 relative), plus the rounding of both runs
    assert shrink_l2[0].abs().item() < steps * lr * (2 * 0.005 * 0.2 / 10) + 2 * steps * EPS
    # The other moves lr per step, whatever the strength: its gradient 2 * 0.005 * w only falls, as w
    # does from 1 to no less than 0.8, so m_hat (weighted to the recent, smaller gradients) is at most
    # sqrt(v_hat) and at least 0.8 of it
    assert 0.8 * steps * lr <= shrink_l2[1].item() <= steps * lr
