"""Run configuration: nested dataclasses, TOML recipes and validated `--set key=value` overrides.

    cfg = load_config(recipe="default", overrides=["optim.lr=0.1", "model.act=elu"])

Unknown keys are rejected with the closest valid name; values are type-checked. Keys under `model.`
other than `name`, `init` and `init_options` are options of the chosen model and are checked against
its signature when the model is built. The resolved config is saved as config.json in the run and
inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from trainlab.errors import ConfigError
from trainlab.registry import suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    val_size: int = 5000  # images held out of the training set, seeded
    limit_train: int | None = None  # use only the first N training images (after the split)
    preprocess: str = "channel_mean_std"
    preprocess_options: dict = field(default_factory=dict)
    augment: str | dict = ""  # spec string, e.g. "hflip,translate=2", or a TOML table {hflip = {}, ...}
    batch_size: int = 256
    eval_batch_size: int = 1024
    memory_budget_mb: float = 4096  # larger image folders stream from disk through worker processes
    workers: int = 2  # only for streaming datasets


@dataclass
class ModelConfig:
    name: str = "cnn"
    init: str | None = None
    init_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # model-specific: act, norm, dropout, widths, ...


@dataclass
class TaskConfig:
    name: str = "classification"  # classification | regression (see `trainlab list tasks`)
    loss: str | None = None  # regression: mse | l1 (default mse); classification: cross-entropy only


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    fixup_scalar_lr_scale: float = 0.1  # Fixup's scalars train at lr x this (the paper's code)


@dataclass
class ScheduleConfig:
    name: str = "onecycle"  # constant | step | cosine | onecycle
    warmup_epochs: float = 0.0  # cosine: linear warmup from 0
    step_epochs: int = 10  # step: multiply by gamma every step_epochs
    gamma: float = 0.1
    pct_start: float = 0.25  # onecycle: share of training spent rising to the peak lr
    final_lr_frac: float = 0.0  # cosine / onecycle: lr at the end, as a fraction of the peak


@dataclass
class PenaltyConfig:
    name: str = "none"  # none | l1 | l2 | elastic_net
    strength: float = 0.0
    options: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 5
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    compile: bool = False  # torch.compile (CUDA)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: bool | None = None  # None: on CUDA only
    early_stopping: int | None = None  # patience in epochs; None = off
    min_delta: float = 0.0
    restore_best: bool = True
    ema: float | None = None  # decay of an exponential moving average of the weights; None = off
    tta: bool = False  # test-time augmentation: average logits over the image and its mirror
    threads: int | None = None  # CPU threads for torch; None = torch's default
    checkpoint_every: int = 1  # epochs between resume checkpoints; 0 = after the last epoch only
    checkpoint_steps: int = 0  # also a resume checkpoint every N steps within an epoch; 0 = off
    diagnose: bool = False  # activation / gradient diagnostics callbacks


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        cfg = cls()
        for key, value in flatten(data):
            set_value(cfg, key, value)
        return cfg

    def set(self, key: str, value: Any) -> Config:
        set_value(self, key, value)
        return self


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{"optim": {"lr": 0.1}} -> [("optim.lr", 0.1)]; dict-typed fields stay whole."""
    items = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not is_dict_field(dotted):
            items += flatten(value, dotted + ".")
        else:
            items.append((dotted, value))
    return items


def is_dict_field(dotted: str) -> bool:
    section, _, name = dotted.partition(".")
    section_cls = {f.name: f.type for f in dataclasses.fields(Config)}.get(section)
    if not name or section_cls is None:
        return False
    hints = get_type_hints(globals()[section_cls] if isinstance(section_cls, str) else section_cls)
    hint = hints.get(name)
    return hint is dict or dict in get_args(hint)


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set dotted `key` on cfg, type-checking `value`; ConfigError with a suggestion when unknown."""
    section_name, _, name = key.partition(".")
    if not name:
        if section_name == "recipe":
            cfg.recipe = value
            return
        raise ConfigError(f"config key {key!r}: expected section.key, e.g. optim.lr=0.1")
    sections = {f.name: f for f in dataclasses.fields(cfg) if f.name != "recipe"}
    if section_name not in sections:
        raise ConfigError(suggest(section_name, list(sections), "config section"))
    section = getattr(cfg, section_name)
    hints = get_type_hints(type(section))
    if section_name == "model" and name not in hints:
        section.options[name] = value  # validated against the model's signature at build time
        return
    if "." in name:
        head, _, sub = name.partition(".")
        if hints.get(head) is dict:
            getattr(section, head)[sub] = value
            return
    if name not in hints:
        raise ConfigError(suggest(name, list(hints), f"key in [{section_name}]:"))
    setattr(section, name, coerce(value, hints[name], key))


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the field's type hint, converting int -> float where that is lossless."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else ()
    types = [t for t in options if t is not type(None)] or [hint]
    if value is None and type(None) in options:
        return None
    for t in types:
        base = get_origin(t) or t
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, list, dict) and isinstance(value, base):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in types)
    raise ConfigError(f"config key {key!r}: expected {names}, got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.1' -> ('optim.lr', 0.1). Values parse as JSON where they can, else as strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=0.1")
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {"none": None, "null": None, "true": True, "false": False}.get(raw.lower(), raw)
    return key.strip(), value


def recipe_names() -> list[str]:
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files("trainlab.recipes").iterdir()
        if p.name.endswith(".toml")
    )


def read_recipe(name: str) -> dict[str, Any]:
    """A recipe by name (shipped in trainlab/recipes) or by path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text()
    elif name in recipe_names():
        text = resources.files("trainlab.recipes").joinpath(f"{name}.toml").read_text()
    else:
        raise ConfigError(suggest(name, recipe_names(), "recipe"))
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {name!r}: invalid TOML ({e})") from None


def load_config(recipe: str | None = "default", overrides: list[str] | dict[str, Any] = ()) -> Config:
    """The default config, then the recipe, then overrides ("key=value" strings or a {key: value} dict)."""
    cfg = Config.from_dict(read_recipe(recipe)) if recipe else Config()
    cfg.recipe = recipe
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in pairs:
        set_value(cfg, key, value)
    return cfg
