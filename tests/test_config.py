"""Config: recipes, overrides with type checks and suggestions, TOML tables, round trip."""

from __future__ import annotations

import pytest

from trainlab.config import Config, load_config, parse_override
from trainlab.errors import ConfigError
from trainlab.models import create_model


def test_overrides_parse_and_type_check():
    cfg = load_config(
        "default", ["optim.lr=0.2", "train.grad_clip=1", "data.limit_train=null", "model.widths=[8,16]"]
    )
    assert cfg.optim.lr == 0.2 and cfg.train.grad_clip == 1.0 and cfg.data.limit_train is None
    assert cfg.model.options["widths"] == [8, 16]
    assert parse_override("data.augment=hflip,translate=2") == ("data.augment", "hflip,translate=2")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "did you mean 'lr'"),
        ("optimm.lr=1", "did you mean 'optim'"),
        ("train.epochs=1.5", "expected int, got 1.5"),
        ("train.tta=yes", "expected bool"),
        ("lr", "expected key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("default", [override])
    assert "\n" not in str(info.value)


def test_unknown_model_option_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'widths'"):
        create_model("cnn", widht=[8])


def test_recipe_from_a_toml_file_with_an_augment_table(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[model]\nname = "mlp"\n[data.augment]\nhflip = {}\ntranslate = 2\n[train]\nepochs = 1\n')
    cfg = load_config(str(path))
    assert cfg.model.name == "mlp" and cfg.data.augment == {"hflip": {}, "translate": 2}
    assert Config.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(tmp_path / "broken.toml"))
