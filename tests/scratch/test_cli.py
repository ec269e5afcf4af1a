"""`trainlab scratch train` and `trainlab scratch gradcheck`, through the CLI as a user calls them.

The training test runs the lecture MLP on 2,000 real Fashion-MNIST images for one epoch (about a second)
and tests on the 10,000 test images. A model at chance (accuracy 0.1 in expectation) exceeds 0.5 with
probability below exp(-2 n 0.4^2) = exp(-3200) for n = 10,000 (Hoeffding), so accuracy > 0.5 says it learned.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from trainlab.cli import main
from trainlab.scratch import evaluate
from trainlab.scratch_run import ScratchSettings, build_model, default_gradcheck_network, load_arrays

TRAIN_ARGS = [
    "scratch",
    "train",
    "--limit-train",
    "2000",
    "--epochs",
    "1",
    "--val-size",
    "1000",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch") / "run"
    assert main([*TRAIN_ARGS, "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_a_run_directory_with_strict_json(run):
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "mlp" and config["widths"] == [100, 50] and config["act"] == "relu"
    assert config["limit_train"] == 2000 and config["seed"] == 3
    summary = json.loads((run / "summary.json").read_text())  # json.loads accepts NaN, so check for it too
    assert "NaN" not in (run / "summary.json").read_text()
    assert summary["epochs_run"] == 1 and summary["train_size"] == 2000
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"train_loss", "val_loss", "val_accuracy", "images_per_s"} <= rows[0].keys()
    assert float(rows[0]["val_accuracy"]) == pytest.approx(summary["best_val_accuracy"], rel=1e-5)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_train_learns_well_above_chance(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.5  # chance is 0.1: see the module docstring for the bound


def test_saved_weights_are_the_trained_ones(run):
    """Rebuilt from model.safetensors, the model scores the summary's test accuracy exactly."""
    tensors = load_file(run / "model.safetensors")
    settings = ScratchSettings(limit_train=2000, epochs=1, val_size=1000, seed=3).resolved()
    splits = load_arrays(settings)
    model = build_model(settings, splits.x_train.shape[1:], 10)
    assert {f"model.{k}" for k in model.params} | {"preprocess.mean", "preprocess.std"} == tensors.keys()
    for name, array in model.params.items():
        assert tensors[f"model.{name}"].shape == array.shape and tensors[f"model.{name}"].dtype == np.float32
        array[...] = tensors[f"model.{name}"]
    np.testing.assert_array_equal(tensors["preprocess.mean"], splits.preprocess["mean"])
    summary = json.loads((run / "summary.json").read_text())
    assert evaluate(model, splits.x_test, splits.y_test)["accuracy"] == summary["test_accuracy"]


def test_a_run_directory_is_not_overwritten_unless_asked(run, capsys):
    before = (run / "summary.json").read_text()
    assert main([*TRAIN_ARGS, "--out", str(run), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "summary.json").read_text() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet"], "'resnet' is not a scratch model"),
        (["--act", "relu9"], "relu9"),
        (["--dataset", "fashion-mnsit"], "fashion-mnsit"),
        (["--widths", "100,x"], "--widths '100,x'"),
        (["--widths", "100,0"], "--widths '100,0'"),
        (["--model", "lenet5", "--widths", "100"], "lenet5's are fixed"),
        (["--optimizer", "rmsprop"], "rmsprop"),
        (["--lr", "-1"], "lr=-1.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    assert main(["scratch", "train", *args, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error:") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_gradcheck_every_layer_below_1e_7(capsys):
    assert main(["scratch", "gradcheck", "--samples", "60", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [f"{r['layer']}.{r['param']}" for r in rows]
    assert names == list(default_gradcheck_network().params)  # every parameter of 784-100-50-10
    assert [r["shape"] for r in rows] == [[784, 100], [100], [100, 50], [50], [50, 10], [10]]
    for r in rows:
        assert 0 <= r["relative_error"] < 1e-7, r


def test_gradcheck_prints_one_line_per_parameter(capsys):
    assert main(["scratch", "gradcheck", "--samples", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "784-100-50-10" in lines[0] and len(lines) == 7
    assert all("relative error" in line for line in lines[1:])
