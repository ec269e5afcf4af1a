"""Issue 12, fuzzing of run-file loading (hypothesis): a mutated, truncated or bit-flipped
model.safetensors, hostile metadata written with a valid digest, and a mutated config.json each either
load or raise trainlab's one-line error (a TrainlabError), within bounded memory.

A file that loads after a mutation must give the original's weights: a damaged file is never read as a
different model. Memory is bounded by the peak resident size of the process, which may grow by less
than 1 GiB over all examples (a hostile config once made the loader try to allocate 4 TB). There is no
time assertion (the machine is shared); the work is bounded by design, since the model is first built on
the meta device and compared with the file."""

from __future__ import annotations

import json
import resource
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from tests.reliability.test_run_files import TINY
from trainlab.config import load_config
from trainlab.errors import TrainlabError
from trainlab.io import read_json
from trainlab.predict import load_trained
from trainlab.run import train
from trainlab.training.checkpoint import check_checkpoint_model, config_from, load_checkpoint, save_checkpoint

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 3, 28, 2**31, 2**63, 10**30, 65536])
    | st.integers()
    | st.floats()
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
MODEL_OPTION_NAMES = [
    "widths",
    "act",
    "norm",
    "dropout",
    "dropout_mode",
    "image_size",
    "num_classes",
    "in_features",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    train(load_config("default", {**TINY, "train.epochs": 1}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def original(finished):
    return load_checkpoint(finished / "model.safetensors")


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the run whose model.safetensors each example overwrites."""
    return shutil.copytree(finished, tmp_path / "run")


@pytest.fixture
def bounded_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20


def loads_or_refuses(run_dir):
    """The TrainedModel, or None after a TrainlabError of one line naming a run file; anything else fails."""
    try:
        return load_trained(run_dir, "cpu")
    except TrainlabError as e:
        assert "\n" not in str(e) and str(run_dir) in str(e), str(e)
        return None


def assert_original_weights(trained, original):
    tensors, meta = original
    state = trained.model.state_dict()
    assert all(
        torch.equal(state[k[len("model.") :]], v) for k, v in tensors.items() if k.startswith("model.")
    )
    assert trained.classes == meta["classes"]


def leaf_paths(value, path=()):
    """Every path into nested dicts and lists, the containers themselves included."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from leaf_paths(child, (*path, key))


def replaced(value, path, new):
    if not path:
        return new
    value = json.loads(json.dumps(value))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


@FUZZ
@given(data=st.data())
def test_bit_flips_are_refused_or_harmless(run, finished, original, bounded_memory, data):
    path = run / "model.safetensors"
    raw = bytearray((finished / "model.safetensors").read_bytes())
    header_end = 8 + int.from_bytes(raw[:8], "little")
    regions = {
        "header size": (0, 7),
        "header": (8, header_end - 1),
        "tensor data": (header_end, len(raw) - 1),
    }
    for _ in range(data.draw(st.integers(1, 4))):
        region = regions[data.draw(st.sampled_from(list(regions)))]
        raw[data.draw(st.integers(*region))] ^= 1 << data.draw(st.integers(0, 7))
    path.write_bytes(bytes(raw))
    trained = loads_or_refuses(run)
    if trained is not None:
        assert_original_weights(trained, original)


@FUZZ
@given(data=st.data())
def test_truncated_or_overwritten_files_are_refused_or_harmless(
    run, finished, original, bounded_memory, data
):
    raw = (finished / "model.safetensors").read_bytes()
    if data.draw(st.booleans()):
        mutated = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        start = data.draw(st.integers(0, len(raw) - 1))
        mutated = raw[:start] + data.draw(st.binary(min_size=1, max_size=64)) + raw[start + 64 :]
    (run / "model.safetensors").write_bytes(mutated)
    trained = loads_or_refuses(run)
    if trained is not None:
        assert_original_weights(trained, original)


@FUZZ
@given(data=st.data(), value=JSON)
def test_hostile_metadata_with_a_valid_digest_loads_or_is_one_line(
    run, original, bounded_memory, data, value
):
    tensors, meta = original
    paths = [p for p in leaf_paths(meta) if p[:1] in ((), ("config",), ("classes",), ("image_shape",))]
    target = data.draw(st.sampled_from(paths))
    save_checkpoint(run / "model.safetensors", tensors, replaced(meta, target, value))
    loads_or_refuses(run)


@FUZZ
@given(
    options=st.dictionaries(st.sampled_from(MODEL_OPTION_NAMES), JSON, max_size=3),
    shape=st.just([1, 28, 28]) | st.lists(st.sampled_from([0, 1, 3, 28, 29, 4096, 4097, 2**31]), max_size=4),
)
def test_hostile_model_options_and_shapes_allocate_nothing(run, original, bounded_memory, options, shape):
    tensors, meta = original
    meta = replaced(replaced(meta, ("config", "model", "options"), options), ("image_shape",), shape)
    save_checkpoint(run / "model.safetensors", tensors, meta)
    loads_or_refuses(run)


@FUZZ
@given(data=st.data())
def test_legacy_files_with_damaged_tensor_data_load_or_are_one_line(run, original, bounded_memory, data):
    """No digest to catch it: a flipped data byte must still load (finite weights) or be refused (NaN)."""
    tensors, meta = original
    name = data.draw(st.sampled_from(sorted(tensors)))
    raw = bytearray(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if raw:
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    damaged = (
        torch.frombuffer(raw, dtype=tensors[name].dtype).reshape(tensors[name].shape).clone() if raw else None
    )
    changed = {**tensors, name: damaged} if raw else tensors
    (run / "model.safetensors").write_bytes(save(changed, metadata={"trainlab": json.dumps(meta)}))
    loads_or_refuses(run)


@FUZZ
@given(data=st.data(), value=JSON)
def test_config_json_mutations_load_or_are_one_line(run, finished, bounded_memory, data, value):
    config = run / "config.json"
    text = (finished / "config.json").read_text()
    kind = data.draw(st.sampled_from(["truncate", "flip", "replace"]))
    if kind == "truncate":
        mutated = text[: data.draw(st.integers(0, len(text) - 1))].encode()
    elif kind == "flip":
        raw = bytearray(text.encode())
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        mutated = bytes(raw)
    else:
        parsed = json.loads(text)
        target = data.draw(st.sampled_from(list(leaf_paths(parsed))))
        mutated = json.dumps(replaced(parsed, target, value)).encode()
    config.write_bytes(mutated)
    try:  # what a resume reads: config.json, then the model its checkpoint holds
        last = run / "checkpoints" / "last.safetensors"
        check_checkpoint_model(config_from(read_json(config), config), load_checkpoint(last)[1], last)
    except TrainlabError as e:
        assert "\n" not in str(e) and str(run) in str(e), str(e)
