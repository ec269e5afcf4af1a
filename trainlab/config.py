"""Run configuration: nested dataclasses, TOML recipes and validated `--set key=value` overrides.

    cfg = load_config(recipe="default", overrides=["optim.lr=0.1", "model.act=elu"])

Every field declares what it may hold next to its default: a range (`Range(1, INT32_MAX)`), a choice
set (`OneOf`), a name's form (`Name`) or a table (`Table`). Every assignment is checked against the
field's type and rule, whatever it comes from (recipe, --set, config.json, code), so a bad value is one
ConfigError naming the key, the value and what is allowed, before any work starts. Unknown keys are
rejected with the closest valid name.

Keys under `model.` other than `name`, `init`, `init_options`, `pretrained` and `keep_stages` are options
of the chosen model: their values are checked here against MODEL_OPTIONS (widths, act, dropout, ...), and
whether the model takes them, and whether a name (act, norm) is registered, by trainlab.models.factory
against the model's signature: the registries live in layers above this one. The resolved config is saved
as config.json in the run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
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

INT32_MAX = 2**31 - 1  # counts (epochs, batch sizes, images, steps) stay within torch's int32 indexing
SEED_MAX = 2**32 - 1  # the seed range NumPy's legacy generator and torch's generators share
MAX_THREADS = 256  # more than any machine's cores; 5000 threads segfaulted inside OpenMP (issue 12)
MAX_WIDTH = 65536  # channels or units of one layer; more is a typo that would allocate gigabytes


def number_text(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def short(value: Any, limit: int = 80) -> str:
    """repr(value) on one line, cut at `limit` characters: a message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Rule:
    """What a field may hold beyond its type: `allows(value)` and the phrase `describe(type_text)`."""

    def allows(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self, type_text: str) -> str:
        raise NotImplementedError

    def check(self, key: str, value: Any, hint: Any) -> Any:
        converted = coerce(value, hint, key)
        if converted is not None and not self.allows(converted):
            raise ConfigError(f"config key {key!r}: expected {type_text(hint, self)}, got {short(value)}")
        return converted


@dataclass(frozen=True)
class Range(Rule):
    """Numbers from `low` to `high` (None: unbounded); an open end excludes its bound. NaN and the
    infinities are outside every range."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def describe(self, type_text: str) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            brackets = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{type_text} in {brackets[0]}{number_text(low)}, {number_text(high)}{brackets[1]}"
        if low is not None:
            return f"{type_text} {'>' if self.open_low else '>='} {number_text(low)}"
        return f"{type_text} {'<' if self.open_high else '<='} {number_text(high)}"


@dataclass(frozen=True)
class Items(Rule):
    """A list of exactly `length` items (None: one or more), each within `each`."""

    each: Range
    length: int | None = None

    def allows(self, value: Any) -> bool:
        count = len(value) == self.length if self.length is not None else len(value) >= 1
        return count and all(self.each.allows(v) for v in value)

    def describe(self, type_text: str) -> str:
        count = f"{self.length} items" if self.length is not None else "one or more items"
        return f"{type_text} ({count}, each {self.each.describe('').strip()})"


@dataclass(frozen=True)
class OneOf(Rule):
    choices: tuple[Any, ...]

    def allows(self, value: Any) -> bool:
        return value in self.choices

    def describe(self, type_text: str) -> str:
        return "one of " + ", ".join(map(repr, self.choices))


@dataclass(frozen=True)
class Name(Rule):
    """A name (a registry's, a path, a device) whose form is checked here: one line of text matching
    `pattern`; with `table`, also a table with such a "name" (act = {name = "leaky_relu", slope = 0.1}).
    Whether a registry knows it is checked by that registry, in the layer above that holds it."""

    what: str
    pattern: str = r"[^\x00-\x1f\x7f]{1,4096}"
    table: bool = False

    def allows(self, value: Any) -> bool:
        name = value.get("name") if self.table and isinstance(value, dict) else value
        return isinstance(name, str) and re.fullmatch(self.pattern, name) is not None

    def describe(self, type_text: str) -> str:
        return self.what


@dataclass(frozen=True)
class Table(Rule):
    """A table of options with string keys, whose values the named consumer checks."""

    what: str

    def allows(self, value: Any) -> bool:
        return not isinstance(value, dict) or all(isinstance(k, str) for k in value)

    def describe(self, type_text: str) -> str:
        return self.what


@dataclass(frozen=True)
class ModelOptions(Rule):
    """model.options: each option's value against its MODEL_OPTIONS rule, reported as `model.<option>`."""

    def check(self, key: str, value: Any, hint: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a table of model options, got {short(value)}")
        options = {}
        for name, option in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(
                    f"config key {'model.' + str(name)!r}: a model option's name is an identifier"
                )
            option_hint, rule = MODEL_OPTIONS.get(name, (Any, None))
            options[name] = check_value(f"model.{name}", option, option_hint, rule)
        return options


def checked(rule: Rule, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field with its declared rule (read by Section.__setattr__ and the reliability tests)."""
    return field(default=default, metadata={"allowed": rule}, **kwargs)


COUNT = Range(1, INT32_MAX)  # epochs, batch sizes, images
COUNT_OR_ZERO = Range(0, INT32_MAX)
POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
BELOW_ONE = Range(0, 1, open_high=True)  # a probability that must leave something, or a decay
NAME = r"[A-Za-z0-9_][\w.:-]{0,127}"  # a registered name: one word, e.g. channel_mean_std, resnet18


def listed(family: str, what: str) -> Name:
    """The name of a registered `what`, listed by `trainlab list FAMILY`."""
    return Name(f"{what} name (see `trainlab list {family}`)", NAME)


# Model options that several models share (each model's signature says which it takes).
MODEL_OPTIONS: dict[str, tuple[Any, Rule | None]] = {
    "widths": (list[int], Items(Range(1, MAX_WIDTH))),  # channels (or units) per stage
    "neck_width": (int, Range(1, MAX_WIDTH)),  # centernet: channels of the top-down path
    "head_width": (int, Range(1, MAX_WIDTH)),  # centernet, locnet: channels of each head's hidden layer
    "act": (
        str | dict,
        Name("an activation name (see `trainlab list activations`) or table", NAME, table=True),
    ),
    "norm": (str | None, listed("norms", "a norm")),
    "dropout": (float, BELOW_ONE),  # the drop probability
    "dropout_mode": (str, OneOf(("inverted", "test_scale"))),  # trainlab.nn.regularize.DROPOUT_MODES
    "small_input": (bool | None, None),
    "aux_logits": (bool, None),
    "logit_scale": (float, POSITIVE),
    "stem_stride": (int, OneOf((1, 2))),
    "encoder": (str, OneOf(("plain", "speednet"))),  # unet, instance_net: trainlab.models.unet.build_unet
    "fine_widths": (list[int], Items(Range(1, MAX_WIDTH))),  # speednet-encoder U-Net: strides 1 and 2
    "coarse_scores": (bool, None),  # speednet-encoder U-Net: the class scores add stride-4 ones
}


class Section:
    """Base of the config sections. Every assignment, the dataclass's own __init__ included, is checked
    against the field's type and declared rule, so no section ever holds a value its rule refuses."""

    def __setattr__(self, name: str, value: Any) -> None:
        rules, section = field_rules(type(self)), section_name(type(self))
        if name not in rules:
            raise ConfigError(suggest(name, list(rules), f"key in [{section}]:"))
        hint, rule = rules[name]
        super().__setattr__(name, check_value(f"{section}.{name}", value, hint, rule))


def section_name(cls: type) -> str:
    return cls.__name__.removesuffix("Config").lower()  # TrainConfig -> train


@functools.cache
def field_rules(cls: type) -> dict[str, tuple[Any, Rule | None]]:
    """{field: (type hint, declared rule)} of a section."""
    hints = get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata.get("allowed")) for f in dataclasses.fields(cls)}


@dataclass
class DataConfig(Section):
    dataset: str = checked(
        Name("a dataset name (see `trainlab list datasets`) or folder:PATH"), "fashion-mnist"
    )
    val_size: int = checked(COUNT_OR_ZERO, 5000)  # images held out of the training set, seeded
    limit_train: int | None = checked(COUNT, None)  # use only the first N training images (after the split)
    limit_test: int | None = checked(COUNT, None)  # test only the first N test images (or scenes)
    # keep N training images of each class (after the split and limit_train), seeded and stratified
    per_class: int | None = checked(COUNT, None)
    preprocess: str = checked(listed("preprocessing", "a preprocessing"), "channel_mean_std")
    preprocess_options: dict = checked(Table("a table of data.preprocess options"), default_factory=dict)
    # spec string, e.g. "hflip,translate=2", or a TOML table {hflip = {}, ...}; parsed by data.augment
    augment: str | dict = checked(
        Table("an augmentation spec: a string, e.g. 'hflip,translate=2', or a table"), ""
    )
    batch_size: int = checked(COUNT, 256)
    eval_batch_size: int = checked(COUNT, 1024)
    # larger image folders stream from disk through workers
    memory_budget_mb: float = checked(NON_NEGATIVE, 4096)
    workers: int = checked(Range(0, MAX_THREADS), 2)  # only for streaming datasets


@dataclass
class ModelConfig(Section):
    name: str = checked(listed("models", "a model"), "cnn")
    init: str | None = checked(listed("initializers", "an initializer"), None)
    init_options: dict = checked(Table("a table of model.init options"), default_factory=dict)
    options: dict = checked(ModelOptions(), default_factory=dict)  # model-specific: act, norm, dropout, ...
    # transfer (docs/transfer.md): weights from a run directory or a .safetensors file, head excluded
    pretrained: str | None = checked(Name("a run directory or a .safetensors file"), None)
    keep_stages: int | None = checked(COUNT, None)  # cut after the first k named stages, new head


@dataclass
class TaskConfig(Section):
    name: str = checked(listed("tasks", "a task"), "classification")  # classification | regression
    # regression: mse | l1 (default mse); localization: terms joined by "+", e.g. ce+smooth_l1+giou
    loss: str | None = checked(Name("a loss name", r"[A-Za-z0-9_][\w.:+-]{0,127}"), None)


@dataclass
class OptimConfig(Section):
    name: str = checked(listed("optimizers", "an optimizer"), "sgd")  # sgd | adam | adamw
    lr: float = checked(POSITIVE, 0.1)
    momentum: float = checked(BELOW_ONE, 0.9)
    nesterov: bool = True
    weight_decay: float = checked(NON_NEGATIVE, 5e-4)
    betas: list[float] = checked(Items(BELOW_ONE, 2), default_factory=lambda: [0.9, 0.999])
    eps: float = checked(POSITIVE, 1e-8)
    # Fixup's scalars train at lr x this (the paper's code)
    fixup_scalar_lr_scale: float = checked(NON_NEGATIVE, 0.1)
    # discriminative rates (fastai's slice): the first stage trains at lr x lr_mult, each later stage
    # geometrically faster, the head at lr
    lr_mult: float = checked(Range(0, 1, open_low=True), 1.0)


@dataclass
class ScheduleConfig(Section):
    name: str = checked(listed("schedules", "a schedule"), "onecycle")  # constant | step | cosine | onecycle
    warmup_epochs: float = checked(NON_NEGATIVE, 0.0)  # cosine: linear warmup from 0
    step_epochs: int = checked(COUNT, 10)  # step: multiply by gamma every step_epochs
    gamma: float = checked(Range(0, 1, open_low=True), 0.1)
    pct_start: float = checked(FRACTION, 0.25)  # onecycle: share of training spent rising to the peak lr
    # cosine / onecycle: lr at the end, as a fraction of the peak
    final_lr_frac: float = checked(FRACTION, 0.0)
    # cyclic_cosine: restarts of the cosine (Huang et al. 2017); None = ensemble.snapshots, or 1
    cycles: int | None = checked(COUNT, None)


@dataclass
class PenaltyConfig(Section):
    name: str = checked(listed("penalties", "a penalty"), "none")  # none | l1 | l2 | elastic_net
    strength: float = checked(NON_NEGATIVE, 0.0)
    options: dict = checked(Table("a table of penalty options"), default_factory=dict)


@dataclass
class TrainConfig(Section):
    epochs: int = checked(COUNT, 5)
    seed: int = checked(Range(0, SEED_MAX), 0)
    device: str = checked(Name("auto, cpu, cuda or cuda:N", r"auto|cpu|cuda(:\d{1,4})?"), "auto")
    label_smoothing: float = checked(BELOW_ONE, 0.0)
    grad_clip: float | None = checked(POSITIVE, None)  # max global gradient norm
    compile: bool = False  # torch.compile (CUDA)
    # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16, as trainlab.inference.uses_bf16 reads it
    precision: str = checked(OneOf(("auto", "fp32", "bf16")), "auto")
    channels_last: bool | None = None  # None: on CUDA only
    early_stopping: int | None = checked(COUNT, None)  # patience in epochs; None = off
    min_delta: float = checked(NON_NEGATIVE, 0.0)
    restore_best: bool = True
    # decay of an exponential moving average of the weights; None = off
    ema: float | None = checked(BELOW_ONE, None)
    tta: bool = False  # test-time augmentation: average logits over the image and its mirror
    # CPU threads for torch; None = torch's default
    threads: int | None = checked(Range(1, MAX_THREADS), None)
    # epochs between resume checkpoints; 0 = after the last only
    checkpoint_every: int = checked(COUNT_OR_ZERO, 1)
    # also a resume checkpoint every N steps in an epoch; 0 = off
    checkpoint_steps: int = checked(COUNT_OR_ZERO, 0)
    diagnose: bool = False  # activation / gradient diagnostics callbacks
    # SyncBatchNorm over the global batch in a distributed CUDA run (docs/distributed.md)
    sync_bn: bool = False
    # transfer (docs/transfer.md): "none", "backbone" (all but the head) or "stages:1-3" (1-based)
    freeze: str = checked(
        Name("none, backbone or stages:A-B", r"none|backbone|stages:\d{1,4}(-\d{1,4})?"), "none"
    )
    frozen_bn: str = checked(OneOf(("eval", "train")), "eval")  # eval: frozen BN keeps its statistics
    unfreeze_at: int | None = checked(Range(2, INT32_MAX), None)  # the frozen stages train from this epoch
    # weight averaging (docs/averaging.md): SWA of the weights at the end of epochs swa_start.. (None = off)
    swa_start: int | None = checked(COUNT, None)
    swa_lr: float | None = checked(POSITIVE, None)  # the lr from epoch swa_start on; None = the schedule's
    # constant, or cyclic: each epoch from swa_lr down to swa_lr / 100 (Izmailov et al. 2018)
    swa_anneal: str = checked(OneOf(("constant", "cyclic")), "constant")
    average_top_k: int | None = checked(COUNT, None)  # average the k best epochs' weights (by validation)
    update_bn: bool = True  # recompute batch-norm statistics on the training images after any averaging


@dataclass
class EvalConfig(Section):
    # test-time augmentation policy: none | flip | shift=N | flip,shift=N (trainlab.tasks.tta);
    # None = train.tta's (true: flip)
    tta: str | None = checked(Name("a test-time augmentation policy, e.g. 'flip' or 'flip,shift=2'"), None)
    # scenes runs (trainlab.vision_run): the oracle-box baseline's Fashion-MNIST classifier, a run
    # directory or "auto" (cpu-fast, trained once and cached); None = no oracle baseline
    oracle: str | None = checked(Name("auto or a classification run directory"), None)


@dataclass
class EnsembleConfig(Section):
    snapshots: int = checked(COUNT_OR_ZERO, 0)  # snapshot ensemble: a model at each cycle's end; 0 = off
    # independent members (docs/ensembles.md), seeds train.seed + 0..M-1, trained as one vectorised model
    members: int = checked(Range(1, 64), 1)
    # how members' outputs combine (trainlab.ensemble.combine)
    combine: str = checked(OneOf(("mean_prob", "mean_logit", "vote", "weighted")), "mean_prob")
    # auto: grouped convolutions where they reproduce every member, else one member after another
    engine: str = checked(OneOf(("auto", "grouped", "sequential")), "auto")


@dataclass
class LogConfig(Section):
    tensorboard: bool = False  # event files in RUN/tensorboard (the tensorboard extra)


SECTIONS = (
    DataConfig,
    ModelConfig,
    TaskConfig,
    OptimConfig,
    ScheduleConfig,
    PenaltyConfig,
    TrainConfig,
    EvalConfig,
    EnsembleConfig,
    LogConfig,
)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a table of sections (data, model, ...), got {short(data)}")
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
    section_cls = {section_name(cls): cls for cls in SECTIONS}.get(section)
    if not name or section_cls is None:
        return False
    if section_cls is ModelConfig and name not in field_rules(ModelConfig):
        return True  # a model option's value, e.g. act = {name = "leaky_relu", slope = 0.1}
    hint = field_rules(section_cls)[name][0] if name in field_rules(section_cls) else None
    return hint is dict or dict in get_args(hint)


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set dotted `key` on cfg; the section checks the value's type and rule. ConfigError with a
    suggestion when the key is unknown."""
    part, _, name = key.partition(".")
    if not name:
        if part == "recipe":
            cfg.recipe = coerce(value, str | None, key)
            return
        raise ConfigError(f"config key {short(key)}: expected section.key, e.g. optim.lr=0.1")
    sections = {f.name: f for f in dataclasses.fields(cfg) if f.name != "recipe"}
    if part not in sections:
        raise ConfigError(suggest(part, list(sections), "config section"))
    section = getattr(cfg, part)
    rules = field_rules(type(section))
    head, dot, sub = name.partition(".")
    if part == "model" and head not in rules:
        head, dot, sub = "options", ".", name  # an option of the chosen model
    if dot and rules.get(head, (None,))[0] is dict:
        setattr(section, head, {**getattr(section, head), sub: value})  # checked as a whole table
        return
    setattr(section, name, value)


def check_value(key: str, value: Any, hint: Any, rule: Rule | None = None) -> Any:
    """`value` as the type `hint` asks for, within `rule`; a one-line ConfigError otherwise."""
    return rule.check(key, value, hint) if rule is not None else coerce(value, hint, key)


NOT_CONVERTED = object()


def convert(value: Any, hint: Any) -> Any:
    """`value` as type `hint` (int -> float where it fits; list items too), or NOT_CONVERTED."""
    base = get_origin(hint) or hint
    if hint is Any:
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            return NOT_CONVERTED
    if base is bool:
        return value if isinstance(value, bool) else NOT_CONVERTED
    if base is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else NOT_CONVERTED
    if base is list and isinstance(value, list):
        item = (get_args(hint) or (Any,))[0]
        items = [convert(v, item) for v in value]
        return NOT_CONVERTED if any(v is NOT_CONVERTED for v in items) else items
    if base in (str, dict) and isinstance(value, base):
        return value
    return NOT_CONVERTED


def type_text(hint: Any, rule: Rule | None = None) -> str:
    """'int', 'list of float', 'float in [0, 1) (or none)', ... for messages."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    names = []
    for t in options:
        if t is not type(None):
            args = get_args(t)
            name = getattr(get_origin(t) or t, "__name__", str(t))
            names.append(f"{name} of {type_text(args[0])}" if args else name)
    text = " or ".join(names) if rule is None else rule.describe(" or ".join(names))
    return text + (" (or none)" if type(None) in options else "")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the field's type hint, converting int -> float where that is lossless."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else ()
    if value is None and type(None) in options:
        return None
    for t in [t for t in options if t is not type(None)] or [hint]:
        converted = convert(value, t)
        if converted is not NOT_CONVERTED:
            return converted
    raise ConfigError(f"config key {key!r}: expected {type_text(hint)}, got {short(value)}")


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.1' -> ('optim.lr', 0.1). Values parse as JSON where they can, else as strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {short(text)}: expected key=value, e.g. optim.lr=0.1")
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (a word, a spec), or an int too long or nested too deep
        value = {"none": None, "null": None, "true": True, "false": False}.get(raw.lower(), raw)
    return key.strip(), value


def recipe_names() -> list[str]:
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files("trainlab.recipes").iterdir()
        if p.name.endswith(".toml")
    )


def read_recipe(name: str) -> dict[str, Any]:
    """A recipe by name (shipped in trainlab/recipes) or by path to a TOML file (UTF-8, as TOML requires)."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        if not path.is_file():  # a FIFO would block the read forever
            raise ConfigError(f"recipe {name!r}: not a regular file")
        data = path.read_bytes()
    elif name in recipe_names():
        data = resources.files("trainlab.recipes").joinpath(f"{name}.toml").read_bytes()
    else:
        raise ConfigError(suggest(name, recipe_names(), "recipe"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"recipe {name!r}: not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); TOML is UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError
        raise ConfigError(f"recipe {name!r}: invalid TOML ({short(str(e), 200)})") from None


def load_config(recipe: str | None = "default", overrides: list[str] | dict[str, Any] = ()) -> Config:
    """The default config, then the recipe, then overrides ("key=value" strings or a {key: value} dict)."""
    cfg = Config.from_dict(read_recipe(recipe)) if recipe else Config()
    cfg.recipe = recipe
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in pairs:
        set_value(cfg, key, value)
    return cfg
