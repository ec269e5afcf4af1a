"""Spec strings and tables: parsing, errors with suggestions, equivalence of the two forms."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.data.augment import Augment
from trainlab.data.augment.spec import parse_spec, parse_value
from trainlab.errors import ConfigError


def test_values():
    assert parse_value("2") == 2 and isinstance(parse_value("2"), int)
    assert parse_value("0.4") == 0.4 and parse_value("1e-3") == 1e-3
    assert parse_value("0.08:1") == (0.08, 1) and parse_value("-10:5") == (-10, 5)
    assert parse_value("true") is True and parse_value("random") == "random"


def test_string_forms():
    items = parse_spec("hflip, translate=2, rotate(degrees=15,p=0.5), random_resized_crop(0.35:1)")
    assert items == [
        ("hflip", {}),
        ("translate", {"__primary__": 2}),
        ("rotate", {"degrees": 15, "p": 0.5}),
        ("random_resized_crop", {"__primary__": (0.35, 1)}),
    ]


def test_string_and_table_build_the_same_pipeline():
    text = Augment(
        "hflip,translate=2,rotate(degrees=15,p=0.5),random_resized_crop(scale=0.35:1),mixup=0.2",
        num_classes=10,
    )
    table = {
        "hflip": True,
        "translate": 2,
        "rotate": {"degrees": 15, "p": 0.5},
        "random_resized_crop": {"scale": [0.35, 1.0]},
        "mixup": 0.2,
        "cutout": False,
    }
    assert text.get_config() == Augment(table, num_classes=10).get_config()


def test_aliases_and_spelling():
    assert Augment("horizontal-flip").get_config()["spec"] == {"hflip": {"p": 0.5}}


def test_empty_spec_is_false():
    assert not Augment("") and not Augment("  ") and not Augment({}) and Augment("hflip")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hflp", "did you mean 'hflip'"),
        ("rotate(degres=10)", "did you mean 'degrees'"),
        ("rotate=abc", "degrees must be a number"),
        ("rotate(degrees=10:5)", "lo > hi"),
        ("hflip=1.5", "probability"),
        ("pad_crop=2.5", "whole number"),
        ("rotate(10", "unbalanced"),
        ("hflip,hflip", "appears twice"),
        ("mixup=0.2", "num_classes"),
        ("randaugment(n=2,m=40)", "whole number in [0, 30]"),
        ("random_erasing(value=blue)", "'random'"),
        ("rotate(10,degrees=5)", "given twice"),
        ("translate=-1", "pixels must be >= 0, got -1"),
        ("color_jitter(strength=2)", "strength must be in [0, 1], got 2"),
    ],
)
def test_errors_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError) as e:
        Augment(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_color_jitter_strength_fills_only_the_options_not_given():
    spec = Augment("color_jitter(0.4,hue=0)").get_config()["spec"]["color_jitter"]
    assert spec["brightness"] == (0.6, 1.4) and spec["hue"] == (0.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="hflip rotate=(),:0.5-1e3x_abc", max_size=30))
def test_any_string_builds_or_raises_a_config_error(text):
    try:
        Augment(text, num_classes=3)
    except ConfigError as e:
        assert "\n" not in str(e)
