"""The summary reproduces the lectures' VGG16 table, the published totals and MACs, and the Inception
module arithmetic; bad input specs raise a one-line ConfigError."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.errors import ConfigError
from trainlab.models import create_model
from trainlab.models.summary import (
    inception_module_cost,
    parse_input_spec,
    summarize,
    summarize_model,
    summary_command,
)

# Published multiply-accumulates at 3x224x224 (vgg16 15.5 G, resnet18 1.82 G, resnet50 4.1 G).
PUBLISHED_MACS = {"vgg16": 15.5e9, "resnet18": 1.82e9, "resnet50": 4.1e9}


def test_vgg16_reproduces_the_lectures_table():
    summary = summarize_model("vgg16", (3, 224, 224), 1000)
    convs = [layer for layer in summary.layers if layer.type == "Conv2d"]
    fcs = [layer for layer in summary.layers if layer.type == "Linear"]
    assert [c.memory for c in convs[:2]] == [224 * 224 * 64] * 2  # 3.2M
    assert [c.weights for c in convs[:2]] == [1_728, 36_864]  # (3*3*3)*64, (3*3*64)*64
    assert fcs[0].weights == 102_760_448  # 7*7*512*4096
    assert [c.output_shape for c in convs[-3:]] == [(512, 14, 14)] * 3
    assert summary.total_params == 138_357_544


@pytest.mark.parametrize("name", sorted(PUBLISHED_MACS))
def test_macs_within_2_percent_of_published(name):
    macs = summarize_model(name, (3, 224, 224), 1000).total_macs
    assert abs(macs / PUBLISHED_MACS[name] - 1) < 0.02


def test_meta_and_real_summaries_agree():
    shape = (1, 28, 28)
    real = summarize(create_model("resnet18", image_size=28), shape)
    with torch.device("meta"):
        meta = summarize(create_model("resnet18", image_size=28), shape)
    assert real == meta
    assert sum(layer.params for layer in real.layers) == real.total_params


def test_inception_module_cost_and_the_slides_slip():
    costs = inception_module_cost()
    assert costs["naive"]["total_macs"] == 854_196_224  # the slides' 854M
    assert costs["bottleneck"]["total_macs"] == 271_351_808  # not the slides' 358M
    assert costs["naive"]["output_shape"] == [672, 28, 28]  # 128 + 192 + 96 + 256 from the pool
    assert costs["bottleneck"]["output_shape"] == [480, 28, 28]
    slip = 28 * 28 * 192 * 3 * 3 * 64
    assert round((costs["bottleneck"]["total_macs"] + slip) / 1e6) == 358
    text = summary_command("inception-cost", "3x224x224", 1000)
    assert "854,196,224" in text and "271,351,808" in text and "358,055,936" in text


def test_json_output():
    result = json.loads(summary_command("resnet18", "3x32x32", 10, as_json=True))
    assert {"total_params", "total_macs", "layers"} <= result.keys()
    assert result["total_params"] == sum(layer["params"] for layer in result["layers"])
    assert result["total_macs"] == sum(layer["macs"] for layer in result["layers"])
    assert result["layers"][0]["output_shape"] == [64, 32, 32]  # the small-input stem keeps 32x32


def test_table_ends_in_totals():
    text = summary_command("lenet5", "1x28x28", 10)
    assert "features.0.0" in text and "Conv2d" in text
    assert text.splitlines()[-3] == "parameters: 61,706 (61,706 trainable)"


@pytest.mark.parametrize("spec", ["3x224", "3x224x224x1", "axbxc", "0x28x28", "", "3*224*224"])
def test_bad_input_spec_is_a_one_line_config_error(spec):
    with pytest.raises(ConfigError, match="expected CxHxW") as error:
        summary_command("vgg16", spec, 1000)
    assert "\n" not in str(error.value)


def test_input_spec_parsing():
    assert parse_input_spec("3x224x224") == (3, 224, 224)
    assert parse_input_spec(" 1X28x28 ") == (1, 28, 28)


def test_unknown_model_and_impossible_input_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean .*'vgg16'"):
        summary_command("vgg61", "3x224x224", 1000)
    with pytest.raises(ConfigError):
        summary_command("lenet5", "1x33x33", 10)
