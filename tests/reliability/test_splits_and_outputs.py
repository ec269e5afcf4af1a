"""Issue 12, defects 12, 18 and part of 20: every split is checked before the first step, and a run's
outputs (JSON, figures, report, piped output) survive odd data: no NaN in JSON, no mathtext crash,
one line per error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import image_folder, write_idx
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.data import formats
from trainlab.data.augment.preview import GAP, preview_command
from trainlab.data.datasets import load_dataset
from trainlab.data.loader import DeviceLoader
from trainlab.data.stream import FileImages, StreamLoader
from trainlab.diagnose import diagnostic_callbacks
from trainlab.errors import DataError
from trainlab.io import json_text
from trainlab.predict import evaluate_run
from trainlab.report.html import write_report
from trainlab.run import train
from trainlab.training.trainer import Trainer

TINY_RUN = {"model.name": "mlp", "train.epochs": 1, "data.batch_size": 4, "data.val_size": 4}


def strict_json(path):
    """json.loads that refuses NaN and Infinity, which Python writes by default and no JSON parser reads."""
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path}: {name} in JSON"))


def idx_dataset(root, train_shape, test_shape, name="mnist"):
    """A generated idx dataset `name` under root (for TRAINLAB_DATA): N x H x W uint8 images, labels 0..9."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True)
    for split, shape in (("train", train_shape), ("t10k", test_shape)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, shape).astype(np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, shape[0]).astype(np.uint8))
    return root


def test_train_and_test_shapes_are_compared_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(idx_dataset(tmp_path / "data", (40, 28, 28), (10, 32, 32))))
    with pytest.raises(DataError, match=r"test images are 1x32x32 but the training images are 1x28x28"):
        train(load_config("default", {**TINY_RUN, "data.dataset": "mnist"}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_unreadable_streamed_test_image_is_found_before_the_first_step(tmp_path):
    root = image_folder(tmp_path / "folder")
    (root / "test" / "dark" / "zz.png").write_bytes(b"not a png at all")
    cfg = load_config(
        "default",
        {**TINY_RUN, "data.dataset": f"folder:{root}", "data.memory_budget_mb": 1e-6, "data.workers": 1},
    )
    with pytest.raises(DataError, match="zz.png: not a readable image") as caught:
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_worker_error_is_the_one_line_error_the_worker_raised(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16)).astype(np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:100])  # the header and a third of the pixels: fails only when decoded
    with Image.open(bad) as image:
        assert image.size == (16, 16)  # so that the up-front header check cannot find it
    loader = StreamLoader(FileImages([good, bad], 1, (16, 16)), torch.zeros(2, dtype=torch.long),
                          torch.arange(2), 2, workers=1)  # fmt: skip
    with pytest.raises(DataError) as caught:
        list(loader)
    assert str(caught.value).startswith(f"{bad}: not a readable image")
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_class_names_are_drawn_as_plain_text_in_the_report(tmp_path):
    classes = ["$\\undefinedmacro$", "50$ and 60$"]
    summary = {"test_accuracy": 0.5, "confusion_matrix": [[1, 1], [0, 2]]}
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9}]
    write_report(tmp_path, {"data": {}}, history, summary, classes)
    assert (tmp_path / "confusion.png").stat().st_size > 1000 and (tmp_path / "report.html").exists()


def test_diagnostic_figures_draw_layer_names_as_plain_text(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("flat", nn.Flatten())
    model.add_module("$\\undefinedmacro$", nn.Linear(64, 8))
    model.add_module("act", nn.ReLU())
    model.add_module("out", nn.Linear(8, 3))
    images, labels = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 3, (64,))
    callbacks = diagnostic_callbacks(tmp_path, every=1, capacity=4)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, callbacks=callbacks)
    trainer.fit(DeviceLoader(images, labels, 32), DeviceLoader(images, labels, 64))
    for name in ("activations.png", "activation_histograms.png", "gradients.png", "gradient_flow.png"):
        assert (tmp_path / "diagnostics" / name).stat().st_size > 1000


def test_json_text_writes_non_finite_floats_as_null():
    value = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (2, {"d": float("nan")})}
    assert json.loads(json_text(value)) == {"a": None, "b": [None, None, 1.5], "c": [2, {"d": None}]}


def test_no_validation_split_writes_null_not_nan(tiny_mnist, tmp_path):
    overrides = {**TINY_RUN, "data.dataset": "mnist", "data.val_size": 0, "data.limit_train": 40}
    result = train(load_config("default", overrides), tmp_path / "run", progress=False)
    summary = strict_json(tmp_path / "run" / "summary.json")
    assert (
        summary["best_val_accuracy"] is None and summary["test_accuracy"] == result.summary["test_accuracy"]
    )
    strict_json(tmp_path / "run" / "config.json")


def test_a_folder_without_test_split_says_so_and_eval_refuses_it(tmp_path):
    root = image_folder(tmp_path / "folder", splits=("train",))
    with pytest.warns(UserWarning, match="has no test split"):
        cfg = load_config("default", {**TINY_RUN, "data.dataset": f"folder:{root}"})
        result = train(cfg, tmp_path / "run", progress=False)
    summary = strict_json(tmp_path / "run" / "summary.json")
    assert not [k for k in summary if k.startswith("test_")] and not [
        k for k in result.summary if "test_" in k
    ]
    assert (tmp_path / "run" / "report.html").exists()
    with pytest.raises(DataError, match="has no test split"):
        evaluate_run(tmp_path / "run", "cpu")


def test_val_size_error_names_the_key_and_a_size_that_fits(tmp_path):
    root = image_folder(tmp_path / "folder", per_class=12)
    cfg = load_config("default", {"data.dataset": f"folder:{root}", "model.name": "mlp"})
    with pytest.raises(DataError, match=r"data.val_size=5000 .* 24 training images .* data.val_size=2\b"):
        train(cfg, progress=False)


def test_data_info_refuses_an_empty_training_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAINLAB_DATA", str(idx_dataset(tmp_path / "data", (0, 28, 28), (10, 28, 28))))
    assert main(["data", "info", "mnist"]) == 2
    out, err = capsys.readouterr()
    assert "training split is empty" in err and "nan" not in out


def test_a_dataset_file_replaced_by_a_directory_is_refused(tmp_path, monkeypatch):
    root = idx_dataset(tmp_path / "data", (10, 28, 28), (10, 28, 28), "fashion-mnist")
    (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").unlink()
    (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").mkdir()
    monkeypatch.setenv("TRAINLAB_DATA", str(root))
    # not the system's copy (/usr/share/datasets/fashion-mnist), which the user did not ask for
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: not a regular file"):
        load_dataset("fashion-mnist")


def test_augment_preview_scales_16_bit_images_as_training_does(tmp_path):
    source = tmp_path / "wide.png"
    Image.fromarray(np.full((8, 8), 25700, np.uint16)).save(source)
    preview_command(None, str(source), "hflip", str(tmp_path / "grid.png"))
    original_tile = np.asarray(Image.open(tmp_path / "grid.png"))[GAP, GAP]
    as_trained = formats.load_image(source, 1, (8, 8))  # the conversion training applies: value / 257
    assert as_trained[0, 0, 0] == 100 and original_tile.tolist() == [100] * 3


def test_a_closed_pipe_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -1`) has gone: every write to the pipe fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "trainlab.cli", "list", "models"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 1
