"""The CLI end to end on a small subset, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trainlab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--model", "mlp", "--epochs", "2", "--limit-train", "2000", "--device", "cpu",
                 "--optimizer", "adam", "--lr", "0.003", "--batch-size", "64",
                 "--set", "data.val_size=500", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_summary(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"test_accuracy", "test_loss", "best_val_accuracy", "epochs_run", "train_seconds", "device",
            "torch_version", "seed", "time_to_result_seconds", "load_seconds", "compile_seconds",
            "init_seconds", "eval_seconds"} <= summary.keys()  # fmt: skip
    assert summary["compile_seconds"] == 0 and summary["time_to_result_seconds"] >= summary["train_seconds"]
    assert summary["test_accuracy"] > 0.7 and summary["epochs_run"] == 2
    assert json.loads((run_dir / "config.json").read_text())["data"]["limit_train"] == 2000


def test_eval_reports_confusion_and_per_class_scores(run_dir, capsys):
    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.sum() == 10000 and len(result["f1"]) == 10
    assert result["test_accuracy"] == pytest.approx(np.trace(confusion) / 10000)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_predict_uses_the_training_conversion(run_dir, fashion_mnist, tmp_path, capsys):
    # a test image saved as a larger RGB PNG must be converted back to 28x28 grey like training data
    pixels = fashion_mnist.test_images[:8, 0].numpy()
    files = []
    for i, image in enumerate(pixels):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(image).convert("RGB").save(path)
        files.append(str(path))
    assert main(["predict", str(run_dir), *files, "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    for item in results:
        probs = [p["probability"] for p in item["predictions"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and 0 < sum(probs) <= 1 + 1e-6
    predicted = np.array([r["predictions"][0]["index"] for r in results])
    assert (predicted == fashion_mnist.test_labels[:8].numpy()).mean() >= 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet19"], "unknown model 'resnet19'; did you mean"),
        (["train", "--set", "optim.lrr=0.1"], "did you mean 'lr'"),
        (["train", "--set", "train.epochs=many"], "expected int"),
        (["train", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
        (["eval", "/nonexistent/run"], "no model.safetensors"),
        (["list", "modles"], "did you mean 'models'"),
        (["train", "--recipe", "fastest"], "unknown recipe 'fastest'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message):
    proc = subprocess.run([sys.executable, "-m", "trainlab.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_list_recipes_and_models(capsys):
    assert main(["list", "models", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert {"mlp", "cnn"} <= set(names)
    assert main(["list", "recipes", "--json"]) == 0
    assert "default" in [row["name"] for row in json.loads(capsys.readouterr().out)]


def test_zca_whitening_trains_and_feature_modes_need_a_model_that_takes_vectors(tmp_path, capsys):
    args = ["train", "--model", "mlp", "--epochs", "2", "--limit-train", "2000", "--set", "data.val_size=200",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "zca"), "--batch-size", "64",
            "--optimizer", "adam", "--lr", "0.003", "--set", "data.preprocess=zca_whiten"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((tmp_path / "zca" / "summary.json").read_text())["test_accuracy"] > 0.6
    capsys.readouterr()
    # mlp trains on the pca modes' vectors (tests/test_preprocess_vectors.py); an image model is refused
    cnn = ["cnn" if arg == "mlp" else arg for arg in args[:-1]]
    cnn[cnn.index(str(tmp_path / "zca"))] = str(tmp_path / "pca-cnn")  # a new run directory
    assert main(cnn + ["data.preprocess=pca_whiten"]) == 2
    error = capsys.readouterr().err
    assert "model 'cnn' takes images (models that take vectors: mlp)" in error and error.count("\n") == 1
