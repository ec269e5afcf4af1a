"""`dropout_mode` reaches every model: each dropout is trainlab's Dropout in the requested convention, and
the two conventions compute the same network up to the factor 1 - p at each dropout.

    inverted     train  h * m / (1 - p)   test  h
    test_scale   train  h * m             test  h * (1 - p)

So test_scale is the inverted network with every dropout's output multiplied by 1 - p, in training and at
test time. With p = 0.5 that factor and 1 / (1 - p) are powers of two, so the multiplications are exact
in float32 and the two computations agree bit for bit: the same ops on the same values, in the same order.
That each convention's training expectation equals its test output is tested on the module itself, in
tests/nn/test_regularize.py.
"""

import pytest
import torch

import trainlab
from trainlab.config import load_config
from trainlab.errors import ConfigError
from trainlab.models import MODELS, model_from_config, model_options
from trainlab.nn.regularize import Dropout

WITH_DROPOUT = [name for name in MODELS.list() if "dropout" in model_options(name)]
P = 0.5  # 1 - p and 1 / (1 - p) are exact in float32
SCALE_AT = {"inverted": "train", "test_scale": "test"}  # the mapping, written out, not imported


def build(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights for every mode: building a Dropout draws no random numbers
    return trainlab.create_model(name, **options)


def dropouts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every module whose class is named like a dropout, torch.nn's (Dropout, Dropout2d, ...) included."""
    return [m for m in model.modules() if "dropout" in type(m).__name__.lower()]


def test_the_registry_has_models_with_a_dropout_option():
    assert {"mlp", "cnn", "resnet18", "vgg11"} <= set(WITH_DROPOUT)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_every_model_with_a_dropout_option_takes_dropout_mode_inverted_by_default(name):
    assert model_options(name)["dropout_mode"] == "inverted"


@pytest.mark.parametrize("mode", list(SCALE_AT))
@pytest.mark.parametrize("name", MODELS.list())
def test_every_dropout_in_every_model_is_trainlabs_in_the_requested_convention(name, mode):
    accepted = model_options(name)
    options = {"dropout": P, "dropout_mode": mode} if "dropout" in accepted else {}
    if "aux_logits" in accepted:  # GoogLeNet's auxiliary heads have their own dropout
        options["aux_logits"] = True
    found = dropouts(build(name, **options))
    assert all(type(m) is Dropout for m in found), [type(m) for m in found]  # no torch.nn.Dropout left
    assert {m.scale_at for m in found} <= {SCALE_AT[mode]}
    if "dropout" in accepted:
        assert any(m.p == P for m in found)  # the option reaches the model


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_test_scale_is_the_inverted_network_with_each_dropout_scaled_by_1_minus_p(name, training):
    inverted = build(name, dropout=P, dropout_mode="inverted").train(training)
    test_scale = build(name, dropout=P, dropout_mode="test_scale").train(training)
    for a, b in zip(inverted.state_dict().values(), test_scale.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def run(model):
        torch.manual_seed(2)  # the same masks: both models draw them in the same order and shapes
        with torch.no_grad():
            return model(x)

    unscaled = run(inverted)
    for module in dropouts(inverted):
        module.register_forward_hook(lambda m, args, out: out * (1 - m.p))
    expected = run(inverted)
    assert torch.equal(run(test_scale), expected)
    assert not torch.equal(unscaled, expected)  # control: the convention changes the output


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_a_bad_dropout_mode_is_a_one_line_error_naming_the_option_and_the_allowed_values(name):
    with pytest.raises(ConfigError) as err:
        trainlab.create_model(name, dropout_mode="lecture")
    message = str(err.value)
    assert "\n" not in message
    assert "model.dropout_mode='lecture'" in message and "'inverted', 'test_scale'" in message


def test_dropout_mode_is_set_from_the_config_as_set_overrides_do():
    cfg = load_config(overrides=["model.name=mlp", "model.dropout=0.5", "model.dropout_mode=test_scale"])
    found = dropouts(model_from_config(cfg, (1, 28, 28), 10))
    assert found and all(m.scale_at == "test" and m.p == 0.5 for m in found)
