"""Dropout conventions and channel dropout; penalty formulas; decoupled weight decay vs L2 under Adam."""

import pytest
import torch
from torch import nn

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
    assert (samples == 0).float().mean().item() == pytest.approx(p, abs=0.01)


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
    assert (per_map == 0).all(2).float().mean().item() == pytest.approx(0.5, abs=0.05)
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
    free = train_weights("adam", 0.0, 0.0)
    shrink_l2 = free - train_weights("adam", 0.005, 0.0)
    shrink_adamw = free - train_weights("adamw", 0.0, 0.01)
    assert shrink_adamw[0] / shrink_adamw[1] == pytest.approx(0.9, abs=0.05)  # in proportion to w (0.8 vs 1)
    assert shrink_l2[0].abs().item() < 1e-4  # the weight with a large gradient gets no regularisation at all
    assert shrink_l2[1].item() == pytest.approx(
        0.2, rel=0.05
    )  # the other moves lr per step, whatever the strength
