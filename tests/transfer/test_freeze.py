"""Loading by name, the cut, freezing (parameters and batch-norm statistics), the optimiser's groups."""

from __future__ import annotations

import pytest
import torch

from tests.transfer.conftest import TARGET_KEYS
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.errors import ConfigError, TrainlabError
from trainlab.models import create_model
from trainlab.models.stages import cut_after, stage_names
from trainlab.run import train
from trainlab.training.checkpoint import load_checkpoint, unprefixed
from trainlab.training.transfer import load_pretrained, transfer_param_groups


def source_weights(run) -> dict[str, torch.Tensor]:
    return unprefixed("model", load_checkpoint(run / "model.safetensors")[0])


def transfer_run(source_run, **keys):
    cfg = load_config(
        "cpu-fast", {**TARGET_KEYS, "model.pretrained": str(source_run), "model.init": None, **keys}
    )
    return train(cfg, None, progress=False)


def test_speednet_stages_are_named_as_summary_names_its_layers():
    model = create_model("speednet", num_classes=5)
    assert stage_names(model) == ["stem", "groups.0", "groups.1", "groups.2"]
    cut_after(model, 2, (1, 28, 28))
    assert model.head.in_features == 64 and model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert not any(k.startswith(("groups.1", "groups.2")) for k in model.state_dict())


def test_frozen_parameters_and_bn_statistics_are_bit_identical_after_training(source_run):
    before = source_weights(source_run)
    result = transfer_run(source_run, **{"train.freeze": "backbone"})
    after = result.model.state_dict()
    backbone = [k for k in after if not k.startswith("head.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for name in backbone:
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["head.weight"][:, :4], before["head.weight"][:, :4])  # the head trained


def test_frozen_bn_train_mode_re_estimates_statistics_but_keeps_scale_and_shift(source_run):
    before = source_weights(source_run)
    after = transfer_run(
        source_run, **{"train.freeze": "backbone", "train.frozen_bn": "train"}
    ).model.state_dict()
    bn = "groups.0.2"  # ConvGroup: conv, pool, norm, ...
    assert torch.equal(after[f"{bn}.weight"], before[f"{bn}.weight"])
    assert torch.equal(after[f"{bn}.bias"], before[f"{bn}.bias"])
    assert not torch.equal(after[f"{bn}.running_mean"], before[f"{bn}.running_mean"])


def test_stage_range_freezes_only_those_stages(source_run):
    before = source_weights(source_run)
    after = transfer_run(source_run, **{"train.freeze": "stages:1-2"}).model.state_dict()
    assert torch.equal(after["stem.weight"], before["stem.weight"])
    assert torch.equal(after["groups.0.0.weight"], before["groups.0.0.weight"])
    assert not torch.equal(after["groups.1.0.weight"], before["groups.1.0.weight"])


def test_optimiser_gets_trainable_parameters_only_with_sliced_rates():
    model = create_model("speednet", num_classes=5)
    cfg = load_config("cpu-fast", {"train.freeze": "stages:1-2", "optim.lr_mult": 0.01})
    groups = transfer_param_groups(model, cfg)
    in_optimiser = {id(p) for g in groups for p in g["params"]}
    trained = {
        id(p) for name in ("groups.1", "groups.2", "head") for p in model.get_submodule(name).parameters()
    }
    assert in_optimiser == trained
    lrs = {g["stage_index"]: g["lr"] for g in groups}
    assert lrs[None] == cfg.optim.lr
    assert lrs[2] == pytest.approx(cfg.optim.lr * 0.01 ** (2 / 4)) and lrs[3] == pytest.approx(
        cfg.optim.lr * 0.01 ** (1 / 4)
    )


def test_a_mismatched_head_is_one_line_listing_the_names(source_run):
    model = create_model("speednet", num_classes=10, widths=[8, 16, 16])  # the source has 5 classes
    with pytest.raises(TrainlabError) as e:
        load_pretrained(model, source_run)
    message = str(e.value)
    assert "\n" not in message and "head.weight [5, 16] (model [10, 16])" in message
    assert "groups" not in message  # only the mismatched names are listed
    assert load_pretrained(model, source_run, exclude={"head.weight"})  # the transfer's default


def test_cli_errors_are_one_line(source_run, tmp_path, capsys):
    def cli(*args):
        code = main(list(args))
        return code, capsys.readouterr().err

    cases = [
        ("train", "--recipe", "cpu-fast", "--model", "cnn", "--set", f"model.pretrained={source_run}"),
        ("train", "--set", "train.freeze=stages:1-9", "--model", "speednet"),
        ("train", "--set", "model.keep_stages=9", "--model", "speednet"),
        ("train", "--set", "train.unfreeze_at=2"),
        ("transfer", "medium-similar", "--dataset", "digits", "--source", str(source_run)),
        ("transfer", "large-similar", "--dataset", "digits", "--source", str(source_run), "--keep", "2"),
        ("transfer", "small-similar", "--dataset", "digits", "--source", str(tmp_path)),
    ]
    expected = ["missing in the source: ['features.0.0.weight'", "stages:A-B with 1 <= A <= B <= 4",
                "has 4 stages (stem, groups.0, groups.1, groups.2)", "train.unfreeze_at needs frozen stages",
                "expected one of small-similar", "--keep applies to small-different only",
                "no config.json"]  # fmt: skip
    for args, text in zip(cases, expected):
        code, err = cli(*args, "--out", str(tmp_path / "out"), "--overwrite")
        assert code == 2 and err.count("\n") == 1 and err.startswith("trainlab: error:"), (args, err)
        assert text in err, (args, err)


def test_keep_stages_out_of_range_is_a_config_error():
    model = create_model("speednet", num_classes=5)
    with pytest.raises(ConfigError, match=r"model.keep_stages=5: .* has 4 stages"):
        cut_after(model, 5, (1, 28, 28))
