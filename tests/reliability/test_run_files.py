"""Issue 12, defects 2, 4, 15 and part of 20: run files carry a digest that every load verifies, files
that parse but are wrong are refused in one line before any allocation, `eval` compares the data's
classes with the model's, and `predict` refuses NaN weights and reports an unreadable file while
predicting the rest.

One tiny Fashion-MNIST run (mlp, 256 images) is trained per module and copied per test."""

from __future__ import annotations

import json
import resource
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

from tests.conftest import image_folder
from trainlab.cli import main
from trainlab.config import Config, load_config
from trainlab.errors import DataError, TrainlabError
from trainlab.predict import evaluate_run, load_trained, predict_files
from trainlab.run import train
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import (
    DIGEST_KEY,
    check_checkpoint_model,
    load_checkpoint,
    save_checkpoint,
)

TINY = {"model.name": "mlp", "model.widths": [16], "data.limit_train": 256, "data.val_size": 64,
        "data.batch_size": 64, "train.device": "cpu", "optim.name": "adam", "optim.lr": 0.003}  # fmt: skip


class Interrupted(Exception):
    pass


class StopAfterFirstEpoch(Callback):
    order = 95  # after the Checkpointer (90) has written last.safetensors

    def on_epoch_end(self, trainer, epoch, logs):
        raise Interrupted


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(load_config("default", {**TINY, "train.epochs": 1}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed after its first of two epochs: config.json and checkpoints/last.safetensors."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(Interrupted):
        train(load_config("default", {**TINY, "train.epochs": 2}), out, callbacks=[StopAfterFirstEpoch()])
    assert not (out / "model.safetensors").exists()
    return out


def copy_of(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def header(path):
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return raw, size, json.loads(raw[8 : 8 + size])


def flip_tensor_byte(path):
    """Flip one bit in the data of the file's first model tensor (the header stays valid)."""
    raw, size, index = header(path)
    first = sorted(k for k in index if k.startswith("model."))[0]
    data = bytearray(raw)
    data[8 + size + index[first]["data_offsets"][0] + 1] ^= 0x10
    path.write_bytes(bytes(data))


def rewrite(path, edit_tensors=None, edit_meta=None):
    """Re-save a trainlab file as trainlab would (valid digest) after changing its tensors or metadata, so
    that the load reaches the schema checks."""
    tensors, meta = load_checkpoint(path)
    save_checkpoint(
        path, edit_tensors(tensors) if edit_tensors else tensors, edit_meta(meta) if edit_meta else meta
    )


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("trainlab: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in err, err
    return err


# ---- 2: digests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_flipped_bit_in_the_model_file_is_refused_and_left_alone(finished, tmp_path, capsys, command):
    run = copy_of(finished, tmp_path)
    flip_tensor_byte(run / "model.safetensors")
    damaged = (run / "model.safetensors").read_bytes()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main([command, str(run), *([str(image)] if command == "predict" else [])]) == 2
    one_line_error(capsys, run / "model.safetensors", "checksum mismatch")
    assert (run / "model.safetensors").read_bytes() == damaged


def test_a_flipped_bit_in_the_resume_checkpoint_is_refused_and_never_overwritten(
    interrupted, tmp_path, capsys
):
    run = copy_of(interrupted, tmp_path)
    last = run / "checkpoints" / "last.safetensors"
    flip_tensor_byte(last)
    damaged = last.read_bytes()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    one_line_error(capsys, last, "checksum mismatch")
    assert last.read_bytes() == damaged and not (run / "model.safetensors").exists()


def test_the_digest_covers_the_metadata_and_its_own_key(finished, tmp_path):
    path = copy_of(finished, tmp_path) / "model.safetensors"
    raw, size, _ = header(path)
    text = raw[8 : 8 + size]
    edited = text.replace(b'\\"epochs\\": 1', b'\\"epochs\\": 7')  # same length: the header stays valid
    assert edited != text
    path.write_bytes(raw[:8] + edited + raw[8 + size :])
    with pytest.raises(TrainlabError, match="checksum mismatch"):
        load_checkpoint(path)
    renamed = edited.replace(DIGEST_KEY.encode(), DIGEST_KEY[:-1].encode() + b"7")  # not read as "no digest"
    path.write_bytes(raw[:8] + renamed + raw[8 + size :])
    with pytest.raises(TrainlabError, match="unexpected header metadata"):
        load_checkpoint(path)


def test_a_file_written_before_digests_loads_unchecked(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    tensors, meta = load_checkpoint(run / "model.safetensors")
    (run / "model.safetensors").write_bytes(save(tensors, metadata={"trainlab": json.dumps(meta)}))
    assert evaluate_run(run, "cpu")["test_accuracy"] == evaluate_run(finished, "cpu")["test_accuracy"]


def test_the_digest_round_trips_every_dtype(tmp_path):
    tensors = {"f": torch.randn(3, 2), "h": torch.randn(4).bfloat16(), "b": torch.tensor([True, False]),
               "i": torch.arange(5), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3)}  # fmt: skip
    save_checkpoint(tmp_path / "c.safetensors", tensors, {"epoch": 1})
    loaded, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert meta == {"epoch": 1} and all(torch.equal(loaded[k], v) for k, v in tensors.items())


# ---- 15: files that parse but are wrong -------------------------------------------------------------
def drop_first_model_tensor(tensors):
    del tensors[sorted(k for k in tensors if k.startswith("model."))[0]]
    return tensors


def shorten_first_model_tensor(tensors):
    first = sorted(k for k in tensors if k.startswith("model."))[0]
    return {**tensors, first: tensors[first][:5].clone()}


def with_config(meta, section, key, value):
    meta["config"][section][key] = value
    return meta


BAD_MODEL_FILES = {
    "metadata is a list": (None, lambda m: [1, 2], "is a JSON list, expected an object"),
    "no config": (
        None,
        lambda m: {k: v for k, v in m.items() if k != "config"},
        "its metadata has no config",
    ),
    "config is a string": (None, lambda m: {**m, "config": "mlp"}, "the config is a JSON str"),
    "config names an unknown key": (None, lambda m: with_config(m, "optim", "lrr", 1), "did you mean 'lr'"),
    "tensor missing": (drop_first_model_tensor, None, "missing ['model."),
    "tensor mis-shaped": (shorten_first_model_tensor, None, "where the model has"),
    "7 classes, 10 outputs": (
        None,
        lambda m: {**m, "classes": m["classes"][:7]},
        "7 outputs (one per class)",
    ),
    "classes not names": (None, lambda m: {**m, "classes": list(range(10))}, "expected a list of names"),
    "config names another model": (
        None,
        lambda m: with_config(m, "model", "name", "lenet5"),
        "model 'lenet5'",
    ),
    "hostile widths (34 GB of weights)": (
        None,
        lambda m: with_config(m, "model", "options", {"widths": [65536] * 3}),
        "do not fit model 'mlp'",
    ),
    "widths longer than the weights": (
        None,
        lambda m: with_config(m, "model", "options", {"widths": [1] * 100}),
        "model.widths has 100 entries",
    ),
    "hostile image shape": (None, lambda m: {**m, "image_shape": [1, 10**5, 10**5]}, "'image_shape' is"),
    "image shape not a list": (None, lambda m: {**m, "image_shape": "28x28"}, "'image_shape' is"),
    "NaN weights": (lambda t: {**t, "model.net.1.bias": t["model.net.1.bias"] * float("nan")}, None, "NaN"),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_a_model_file_that_parses_but_is_wrong_is_one_line(finished, tmp_path, capsys, case):
    edit_tensors, edit_meta, message = BAD_MODEL_FILES[case]
    run = copy_of(finished, tmp_path)
    rewrite(run / "model.safetensors", edit_tensors, edit_meta)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert main(["eval", str(run)]) == 2
    one_line_error(capsys, run / "model.safetensors", message)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 2**20  # under 1 GiB more at peak


def test_a_file_without_trainlab_metadata_is_one_line(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    tensors, _ = load_checkpoint(run / "model.safetensors")
    (run / "model.safetensors").write_bytes(save(tensors))
    assert main(["predict", str(run), str(tmp_path / "any.png")]) == 2
    one_line_error(capsys, run / "model.safetensors", "no trainlab metadata")


@pytest.mark.parametrize(
    "edit, message",
    [(lambda text: text[:100], "not readable JSON"), (lambda text: "[1, 2]", "expected a JSON object")],
    ids=["truncated", "a list"],
)
def test_a_bad_config_json_is_one_line_naming_it(interrupted, tmp_path, capsys, edit, message):
    run = copy_of(interrupted, tmp_path)
    config = run / "config.json"
    config.write_text(edit(config.read_text()))
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    one_line_error(capsys, config, message)


def test_a_config_naming_another_model_than_the_checkpoint_is_refused(interrupted):
    last = interrupted / "checkpoints" / "last.safetensors"
    _, meta = load_checkpoint(last)
    saved = json.loads((interrupted / "config.json").read_text())
    check_checkpoint_model(Config.from_dict(saved), meta, last)  # the run's own config passes
    for name, options in (("lenet5", {}), ("mlp", {"widths": [32]})):
        cfg = Config.from_dict(saved)
        cfg.model.name, cfg.model.options = name, options
        with pytest.raises(TrainlabError, match="holds the weights of model 'mlp'") as error:
            check_checkpoint_model(cfg, meta, last)
        assert str(last) in str(error.value) and "\n" not in str(error.value)


# ---- 4: eval compares the data's classes with the model's -------------------------------------------
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = image_folder(tmp_path_factory.mktemp("folder") / "data", classes=("ant", "bee", "cat"))
    overrides = {**TINY, "data.dataset": f"folder:{root}", "data.val_size": 3, "data.batch_size": 4}
    out = root.parent / "run"
    train(
        load_config("default", {**overrides, "train.epochs": 1, "data.limit_train": None}),
        out,
        progress=False,
    )
    return root, out


@pytest.mark.parametrize(
    "change, now",
    [
        (lambda split: (split / "ant").rename(split / "zebra"), "['bee', 'cat', 'zebra']"),
        (lambda split: shutil.copytree(split / "cat", split / "dog"), "['ant', 'bee', 'cat', 'dog']"),
    ],
    ids=["renamed (reordered)", "added"],
)
def test_eval_refuses_data_whose_classes_differ_from_the_model(folder_run, tmp_path, capsys, change, now):
    root, run = folder_run
    data = shutil.copytree(root, tmp_path / "data")
    copied = copy_of(run, tmp_path)
    rewrite(
        copied / "model.safetensors", edit_meta=lambda m: with_config(m, "data", "dataset", f"folder:{data}")
    )
    assert evaluate_run(copied, "cpu")["test_accuracy"] == evaluate_run(run, "cpu")["test_accuracy"]
    for split in ("train", "test"):
        change(data / split)
    with pytest.raises(DataError):
        evaluate_run(copied, "cpu")
    assert main(["eval", str(copied)]) == 2
    one_line_error(capsys, "trained on classes ['ant', 'bee', 'cat']", now)


# ---- 20: predict ------------------------------------------------------------------------------------
def png(path, value):
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(path)
    return str(path)


def test_one_unreadable_file_costs_only_its_own_prediction(finished, tmp_path, capsys):
    good = [png(tmp_path / "a.png", 0), png(tmp_path / "b.png", 200)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", str(finished), good[0], str(bad), good[1]]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == good
    assert err.splitlines() == [
        f"trainlab: error: {bad}: " + err.splitlines()[0].split(f"{bad}: ", 1)[1],
        "trainlab: error: 1 of 3 files could not be predicted (see above)",
    ]
    assert main(["predict", str(finished), good[0], str(bad), "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert [sorted(r) for r in results] == [["file", "predictions"], ["error", "file"]]


def test_outputs_that_overflow_are_refused_for_that_file_only(finished, tmp_path):
    """Weights chosen so that a blank image gives finite logits and a bright one overflows float32:
    hidden = relu(c * mean(x)) is 0 for the blank image (below the training mean) and > 0 for white."""
    run = copy_of(finished, tmp_path)

    def overflowing(t):
        weight, head = t["model.net.1.weight"], t["model.net.5.weight"]
        return {**t, "model.net.1.weight": torch.full_like(weight, 1 / weight.shape[1]),
                "model.net.1.bias": torch.zeros_like(t["model.net.1.bias"]),
                "model.net.5.weight": torch.full_like(head, 1e38), "model.net.5.bias": torch.full_like(
                    t["model.net.5.bias"], 3e38)}  # fmt: skip

    rewrite(run / "model.safetensors", overflowing)
    results = predict_files(
        load_trained(run, "cpu"), [png(tmp_path / "black.png", 0), png(tmp_path / "white.png", 255)]
    )
    assert "predictions" in results[0] and "error" not in results[0]
    assert (
        results[1]["error"] == f"{tmp_path / 'white.png'}: the model's outputs for this image are not finite"
    )
