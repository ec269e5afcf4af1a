"""Issue 12, defects 5, 16 and 17: every config value is checked where it is set, against the range or
choice set declared next to its field in trainlab/config.py, before any work starts.

The issue's probes go through the CLI (exit 2, one line naming the key, no run directory); then a walk
over every field of the config dataclasses, and every model option, with values just outside what each
declares."""

from __future__ import annotations

import json
import math

import pytest

from trainlab.cli import main
from trainlab.config import (
    MODEL_OPTIONS,
    SECTIONS,
    Config,
    Items,
    ModelConfig,
    ModelOptions,
    Name,
    OneOf,
    Range,
    Table,
    TrainConfig,
    field_rules,
    load_config,
    section_name,
)
from trainlab.errors import ConfigError

TRAIN = ["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--device", "cpu", "--quiet"]
TRAIN += ["--set", "data.val_size=50", "--set", "data.batch_size=64", "--set", "train.threads=1"]

# (probe id, arguments after TRAIN, or a whole command line, the key the message must name)
TRAIN_PROBES = [
    ("threads-5000", ["--set", "train.threads=5000"], "train.threads"),
    ("threads-negative", ["--set", "train.threads=-1"], "train.threads"),
    ("batch-size-0", ["--batch-size", "0"], "data.batch_size"),
    ("batch-size-negative", ["--batch-size", "-8"], "data.batch_size"),
    ("eval-batch-size-0", ["--set", "data.eval_batch_size=0"], "data.eval_batch_size"),
    ("label-smoothing-2", ["--set", "train.label_smoothing=2"], "train.label_smoothing"),
    ("widths-oops", ["--set", "model.widths=oops"], "model.widths"),
    ("widths-negative", ["--set", "model.widths=[-5]"], "model.widths"),
    ("act-5", ["--set", "model.act=5"], "model.act"),
    ("betas-not-numbers", ["--optimizer", "adam", "--set", 'optim.betas=["a",1]'], "optim.betas"),
    ("dropout-1.5", ["--set", "model.dropout=1.5"], "model.dropout"),
    ("seed-2**70", ["--seed", str(2**70)], "train.seed"),
    ("seed-2**70-as-written", ["--seed", "2**70"], "--seed"),
    ("workers-negative", ["--set", "data.workers=-1"], "data.workers"),
    ("epochs-negative", ["--epochs", "-3"], "train.epochs"),
    ("grad-clip-negative", ["--set", "train.grad_clip=-1"], "train.grad_clip"),
    ("ema-1.5", ["--set", "train.ema=1.5"], "train.ema"),
    ("widths-0", ["--set", "model.widths=[0]"], "model.widths"),
    ("lr-nan", ["--set", "optim.lr=NaN"], "optim.lr"),
]


def exit_code(argv: list[str]) -> int:
    """trainlab's exit status for `argv`: main's return value, or argparse's exit for a usage error."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainlab: error: "), err
    return lines[0]


@pytest.mark.parametrize("args, key", [p[1:] for p in TRAIN_PROBES], ids=[p[0] for p in TRAIN_PROBES])
def test_train_probe_is_one_line_naming_the_key_before_any_work(args, key, tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert exit_code([*TRAIN, *args, "--out", str(out)]) == 2
    assert key in one_error_line(capsys)
    assert not out.exists()  # refused before the run directory, let alone a training step


def test_resume_checks_the_run_config_like_a_new_run(tiny_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = load_config("default").to_dict()
    config["train"]["epochs"] = -3
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run)]) == 2
    assert "train.epochs" in one_error_line(capsys)


def test_summary_refuses_zero_classes(capsys):
    assert main(["summary", "cnn", "--num-classes", "0"]) == 2
    assert "--num-classes 0" in one_error_line(capsys)


def test_experiment_refuses_a_negative_number_of_seeds(tmp_path, capsys):
    assert main(["experiment", "init", "--quick", "--seeds", "-2", "--out", str(tmp_path / "e")]) == 2
    assert "--seeds -2" in one_error_line(capsys)
    assert not (tmp_path / "e").exists()


def test_recipe_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, capsys):
    recipe = tmp_path / "latin1.toml"
    recipe.write_bytes("[train]\nepochs = 1  # r\xe9glage\n".encode("latin-1"))
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert str(recipe) in line and "UTF-8" in line and "0xe9" in line


def test_every_assignment_is_checked_not_only_overrides():
    with pytest.raises(ConfigError, match="'train.epochs'"):
        TrainConfig(epochs=-3)
    cfg = Config()
    with pytest.raises(ConfigError, match="'train.ema'"):
        cfg.train.ema = 1.5
    with pytest.raises(ConfigError, match="'model.widths'"):
        cfg.model.options = {"widths": [0]}
    with pytest.raises(ConfigError, match="'model.dropout'"):
        Config.from_dict({"model": {"name": "mlp", "options": {"dropout": 1.5}}})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        cfg.train.epoch = 3
    assert cfg.train.ema is None and cfg.model.options == {}  # a refused value is not half set


# What each rule refuses: values just outside it, and values of another kind.
def outside(rule, hint_is_int: bool) -> list:
    if isinstance(rule, Range):
        bad = [math.nan, math.inf, -math.inf] if not hint_is_int else []
        for bound, is_open, step in ((rule.low, rule.open_low, -1), (rule.high, rule.open_high, 1)):
            if bound is not None:
                bad.append(
                    bound
                    if is_open
                    else bound + step
                    if hint_is_int
                    else math.nextafter(bound, step * math.inf)
                )
        return bad
    if isinstance(rule, Items):
        wrong_length = [] if rule.length is None else [rule.each.low] * (rule.length + 1)
        return [wrong_length, [rule.each.high if rule.each.open_high else rule.each.low - 1]]
    if isinstance(rule, OneOf):
        return ["not-a-choice" if isinstance(rule.choices[0], str) else max(rule.choices) + 1]
    if isinstance(rule, Name):
        return ["", "two\nlines", "\x00"]
    if isinstance(rule, Table):
        return [{1: "a key that is not a string"}]
    if isinstance(rule, ModelOptions):
        return [{"widths": [0]}, {"dropout": 1.0}, {"not an identifier": 1}]
    raise AssertionError(f"no out-of-range values for {rule!r}: add them here")


class AnotherKind:
    """No field takes an arbitrary object. A fixed repr keeps test ids the same in every process."""

    def __repr__(self) -> str:
        return "AnotherKind()"


ANOTHER_KIND = AnotherKind()


def field_cases():
    cases = []
    for cls in SECTIONS:
        for name, (hint, rule) in field_rules(cls).items():
            key = f"{section_name(cls)}.{name}"
            is_int = hint is int or int in getattr(hint, "__args__", ())
            if rule is None:
                assert hint in (bool, bool | None), (
                    f"{key}: declare its range or choice set in trainlab/config.py"
                )
                cases.append((key, "yes"))
                continue
            cases += [(key, value) for value in outside(rule, is_int)]
            cases.append((key, ANOTHER_KIND))
    for name, (hint, rule) in MODEL_OPTIONS.items():
        is_int = hint is int
        cases += [(f"model.{name}", v) for v in ([*outside(rule, is_int)] if rule else ["yes"])]
        cases.append((f"model.{name}", ANOTHER_KIND))
    return cases


@pytest.mark.parametrize("key, value", field_cases(), ids=lambda v: repr(v)[:40])
def test_every_field_refuses_values_outside_its_declared_rule(key, value):
    cfg = Config()
    before = cfg.to_dict()
    with pytest.raises(ConfigError) as info:
        cfg.set(key, value)
    message = str(info.value)
    assert "\n" not in message and (key if key != "model.options" else "'model.") in message, message
    if not isinstance(value, dict):
        assert repr(value)[:20] in message, message
    assert cfg.to_dict() == before


def test_every_field_keeps_its_default_and_takes_the_ends_of_its_range():
    for cls in SECTIONS:
        cls()  # the defaults pass their own rules
        for name, (_, rule) in field_rules(cls).items():
            if isinstance(rule, Range):
                for bound, is_open in ((rule.low, rule.open_low), (rule.high, rule.open_high)):
                    if bound is not None and not is_open:
                        Config().set(f"{section_name(cls)}.{name}", bound)


def test_every_option_of_every_model_has_a_rule():
    from trainlab.models.factory import MODELS, model_options

    set_from_the_data = {"in_channels", "num_classes", "image_size", "in_features"}
    options = {o for name in MODELS.list() for o in model_options(name)} - set_from_the_data
    assert options <= set(MODEL_OPTIONS), (
        f"declare in trainlab.config.MODEL_OPTIONS: {options - set(MODEL_OPTIONS)}"
    )


def test_choice_sets_match_their_consumers():
    import torch

    from trainlab.inference import uses_bf16
    from trainlab.nn.regularize import DROPOUT_MODES

    assert set(MODEL_OPTIONS["dropout_mode"][1].choices) == set(DROPOUT_MODES)
    for precision in field_rules(TrainConfig)["precision"][1].choices:
        uses_bf16(precision, torch.device("cpu"))


def test_every_registered_name_fits_its_field():
    from trainlab.data.datasets import DATASETS
    from trainlab.data.preprocess import PREPROCESSING_MODES
    from trainlab.models.factory import MODELS
    from trainlab.nn.activations import ACTIVATIONS
    from trainlab.nn.init import INITIALIZERS
    from trainlab.nn.norm import NORMS
    from trainlab.nn.regularize import PENALTIES
    from trainlab.tasks.base import TASKS
    from trainlab.training.optim import OPTIMIZERS, SCHEDULES

    fields = {
        "data.dataset": DATASETS, "data.preprocess": PREPROCESSING_MODES, "model.name": MODELS,
        "model.act": ACTIVATIONS, "model.norm": NORMS, "model.init": INITIALIZERS, "penalty.name": PENALTIES,
        "task.name": TASKS, "optim.name": OPTIMIZERS, "schedule.name": SCHEDULES,
    }  # fmt: skip
    for key, registry in fields.items():
        for name in [*registry.list(), *registry.aliases()]:
            Config().set(key, name)
    Config().set("data.dataset", "folder:/data/my images/2024 (v2)")
    Config().set("model.act", {"name": "leaky_relu", "slope": 0.1})


def test_model_options_the_model_does_not_take_or_unregistered_names_are_refused_before_building():
    from trainlab.models.factory import check_model_options

    with pytest.raises(ConfigError, match="did you mean 'widths'"):
        check_model_options("cnn", {"widht": [8]})
    with pytest.raises(ConfigError, match="model.norm: unknown norm 'bach'; did you mean 'batch'"):
        check_model_options("cnn", {"norm": "bach"})
    with pytest.raises(ConfigError, match="model.act: unknown activation"):
        check_model_options("mlp", {"act": {"name": "relux"}})
    assert ModelConfig(options={"act": "Leaky-ReLU"}).options == {"act": "Leaky-ReLU"}
