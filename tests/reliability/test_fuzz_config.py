"""Issue 12, fuzzing: the config (recipes, config.json tables, `--set` overrides) and the augmentation
spec parser. Every input either loads or raises trainlab's one-line error (a TrainlabError); anything
else (a TypeError, a KeyError, a RecursionError) is a defect. Time and memory are bounded by the sizes
of the generated inputs; hypothesis's deadline stays off, since the test machine is shared."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainlab.config import MODEL_OPTIONS, SECTIONS, Config, load_config, section_name
from trainlab.data.augment.base import AUGMENTATIONS
from trainlab.data.augment.spec import build_ops
from trainlab.errors import TrainlabError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [f"{section_name(c)}.{f.name}" for c in SECTIONS for f in dataclasses.fields(c)]
KEYS += [f"model.{name}" for name in MODEL_OPTIONS]
FIELD_NAMES = sorted({key.partition(".")[2] for key in KEYS})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# What a user types after `key=`: JSON of every kind, words, and the edges of the JSON parser.
raw_values = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=16),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "null", "none", "True", "[", "{]"]),
    st.sampled_from(
        ["9" * 5000, "[" * 5000 + "]" * 5000]
    ),  # past int's digit limit; past the recursion limit
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12), st.sampled_from(KEYS).map(lambda k: k + ".x"))
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, raw_values), st.text(max_size=16))


def loads_or_one_line_error(fn, *args):
    """fn(*args), or None when it raised a one-line TrainlabError; any other exception fails the test."""
    try:
        return fn(*args)
    except TrainlabError as e:
        assert "\n" not in str(e), str(e)
        return None


@FUZZ
@given(st.lists(overrides, max_size=4))
def test_set_overrides_load_or_raise_one_line(items):
    cfg = loads_or_one_line_error(load_config, None, items)
    if cfg is not None:  # what loads is a config that survives its own round trip (config.json, resume)
        assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()


sections = st.sampled_from([section_name(c) for c in SECTIONS]) | st.text(max_size=5)
section_tables = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), json_values, max_size=5)


@FUZZ
@given(st.dictionaries(sections, section_tables | json_values, max_size=4) | json_values)
def test_config_tables_load_or_raise_one_line(data):
    loads_or_one_line_error(Config.from_dict, data)


toml_lines = st.one_of(
    st.sampled_from(["[train]", "[model]", "[data.augment]", "[optim]", "[[x]]", "epochs = 1", "lr = nan"]),
    st.builds(lambda k, v: f"{k.partition('.')[2]} = {v}", st.sampled_from(KEYS), raw_values),
    st.text(max_size=20),
)


@FUZZ
@given(st.lists(toml_lines, max_size=6).map("\n".join).map(str.encode) | st.binary(max_size=64))
def test_recipe_files_load_or_raise_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:  # a fresh file per example (tmp_path is per test)
        path = Path(tmp) / "fuzzed.toml"
        path.write_bytes(data)
        loads_or_one_line_error(load_config, str(path))


# The augmentation spec: the one-line string form, the TOML table and the list of tables.
words = st.sampled_from(AUGMENTATIONS.list()) | st.text(max_size=6)
spec_tokens = st.one_of(
    words,
    st.sampled_from(["=", ",", "(", ")", ":", "'", " ", "p=", "1e999", "nan", "-1", "0", "0.5", "3", "true"]),
)
spec_strings = st.lists(spec_tokens, max_size=14).map("".join)
spec_tables = st.dictionaries(words, json_values, max_size=4)
spec_lists = st.lists(
    st.dictionaries(st.sampled_from(["name", "p"]) | st.text(max_size=3), json_values), max_size=3
)


@FUZZ
@given(st.one_of(spec_strings, spec_tables, spec_lists, json_values))
def test_augmentation_specs_build_or_raise_one_line(spec):
    ops = loads_or_one_line_error(build_ops, spec)
    for op in ops or ():  # an op that builds holds finite numbers only (1e999 reads as inf)
        for value in op.get_config().values():
            assert not (isinstance(value, float) and not math.isfinite(value)), (spec, op)


def test_the_fuzzers_reach_the_defects_they_guard():
    """The inputs that broke before the fix, as plain examples: each is now a one-line error."""
    for items in (["model.widths=[" * 5000 + "]" * 5000], ["train.epochs=" + "9" * 5000], ["optim.lr=NaN"]):
        assert loads_or_one_line_error(load_config, None, items) is None
    for spec in ([{}], [{"name": None}], {"posterize": [1, 2, 3]}, "translate=1e999", {"rotate": math.inf}):
        assert loads_or_one_line_error(build_ops, spec) is None
    assert loads_or_one_line_error(Config.from_dict, [1, 2]) is None
