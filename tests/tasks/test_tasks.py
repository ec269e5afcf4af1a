"""Every task trains through the one Trainer: its loss falls, its metrics are logged for training and
validation, its checkpoint state survives a save and a load. Regression fits a 1-D function, the
approximation experiment's setting; a task with dict targets runs the same loop unchanged."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import trainlab
from trainlab.cli import main
from trainlab.data.loader import DeviceLoader
from trainlab.tasks import TASKS, Task
from trainlab.training.checkpoint import load_checkpoint, save_checkpoint


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (n, 1, 8, 8), labels (n,)): class k lights row k."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (n,), generator=g)
    images = torch.randint(0, 40, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    images[torch.arange(n), 0, labels] = 250
    return images, labels


def fit(task: Task, loader, val, epochs: int = 3, num_outputs: int = 8):
    torch.manual_seed(0)
    model = trainlab.create_model("mlp", in_channels=1, num_classes=num_outputs, image_size=8, widths=[32])
    trainer = trainlab.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), epochs=epochs, task=task)
    return trainer, trainer.fit(loader, val)


LABEL_TASKS = [n for n in TASKS.list() if TASKS.meta(n).get("targets") != "scenes"]
SCENE_TASKS = [n for n in TASKS.list() if TASKS.meta(n).get("targets") == "scenes"]


def test_every_scene_task_has_a_recipe_that_the_vision_tests_train():
    """The tasks whose targets are scenes (boxes, masks) train on fmnist-scenes, not on class labels:
    each has its default recipe, which tests/test_vision_run.py builds and checks against its task."""
    from trainlab.vision_run import DEFAULT_RECIPES

    assert SCENE_TASKS and set(SCENE_TASKS) <= set(DEFAULT_RECIPES)
    assert {"classification", "regression"} <= set(LABEL_TASKS)


@pytest.mark.parametrize("name", LABEL_TASKS)
def test_every_task_trains_through_the_trainer(name):
    task = trainlab.create_task(name)
    loader = DeviceLoader(*bars(512, 0), 64, shuffle=True, drop_last=True)
    trainer, history = fit(task, loader, DeviceLoader(*bars(256, 1), 128))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert f"val_{task.monitor}" in history[-1] and "val_loss" in history[-1]
    assert {k for k in history[-1] if k.startswith("train_")} == {"train_loss"} | {
        f"train_{k}" for k in task.metric_sums(trainer.device)
    }
    metrics = trainer.evaluate(DeviceLoader(*bars(256, 2), 128))
    assert metrics["loss"] == pytest.approx(history[-1]["val_loss"], rel=0.5)  # another draw, same scale


def test_classification_learns_and_reports_a_confusion_matrix():
    task = trainlab.create_task("classification")
    trainer, history = fit(
        task, DeviceLoader(*bars(512, 0), 64, shuffle=True), DeviceLoader(*bars(256, 1), 128)
    )
    assert history[-1]["val_accuracy"] > 0.9  # chance is 1/8
    outputs, labels = trainer.predict(DeviceLoader(*bars(64, 2), 64))
    report = task.report(outputs, labels, [str(k) for k in range(8)])
    assert sum(map(sum, report["confusion_matrix"])) == 64 and len(report["f1"]) == 8


def test_regression_approximates_a_smooth_function():
    """y = sin(2 pi x) on [0, 1] by a one-hidden-layer tanh MLP: the validation MSE falls far below the
    variance of y (1/2), which is what a constant prediction would score."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 1, 1, 1, generator=g)  # float inputs in [0, 1] pass through unchanged
    y = torch.sin(2 * math.pi * x).view(-1, 1)
    torch.manual_seed(0)
    model = trainlab.create_model("mlp", in_channels=1, num_classes=1, image_size=1, widths=[32], act="tanh")
    trainer = trainlab.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.02),
        epochs=60,
        task=trainlab.create_task("regression"),
    )
    history = trainer.fit(
        DeviceLoader(x[:768], y[:768], 64, shuffle=True), DeviceLoader(x[768:], y[768:], 256)
    )
    assert history[-1]["val_mse"] < 0.02 < 0.5 * history[0]["val_mse"]
    assert history[-1]["val_mae"] < 0.12


def test_regression_on_class_labels_fits_one_hot_vectors():
    task = trainlab.create_task("regression", loss="mse")
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    labels = torch.tensor([0, 2])
    # (0 + 0 + 0 + 0 + 0.25 + 0.25) / 6
    assert task.evaluate(outputs, labels)["loss"] == pytest.approx(0.5 / 6, rel=1e-6)
    assert trainlab.create_task("regression", loss="l1").evaluate(outputs, labels)["loss"] == pytest.approx(
        1 / 6
    )


class LabelAndValue(Task):
    """A test task with dict targets: a class and a real value per image, from two output columns."""

    name = "label_and_value"
    monitor = "loss"

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs[:, :-1], targets["label"]) + F.mse_loss(
            outputs[:, -1], targets["value"]
        )

    def metric_sums(self, device):
        return {"value_error": torch.zeros((), device=device)}

    def accumulate(self, sums, outputs, targets):
        sums["value_error"] += (outputs[:, -1].detach() - targets["value"]).abs().sum()

    def evaluate(self, outputs, targets):
        return {"loss": float(self.loss(outputs, targets))}


def test_dict_targets_run_the_same_loop_and_resume(tmp_path):
    images, labels = bars(512, 0)
    targets = {"label": labels, "value": labels.float() / 8}
    loader = DeviceLoader(images, targets, 64, shuffle=True, drop_last=True)
    val = DeviceLoader(images[:128], {k: v[:128] for k, v in targets.items()}, 64)
    trainer, history = fit(LabelAndValue(), loader, val, epochs=2, num_outputs=9)
    assert history[-1]["train_loss"] < history[0]["train_loss"] and "train_value_error" in history[-1]
    outputs, joined = trainer.predict(DeviceLoader(images, targets, 100))
    assert outputs.shape == (512, 9) and torch.equal(joined["value"], targets["value"])

    save_checkpoint(tmp_path / "c.safetensors", *trainer.state())
    again, _ = fit(LabelAndValue(), loader, None, epochs=0, num_outputs=9)
    again.load_state(*load_checkpoint(tmp_path / "c.safetensors"))
    assert again.epoch == 2 and again.history == trainer.history


def test_cli_trains_and_evaluates_a_regression_run(tiny_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", "regression", "--set", "task.loss=l1", "--model", "mlp", "--dataset", "mnist",
            "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet", "--set", "data.val_size=44",
            "--out", str(run)]  # fmt: skip
    with pytest.warns(UserWarning, match="train.label_smoothing=0.1 is ignored"):  # the default recipe's
        assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "regression" and {"test_loss", "test_mse", "test_mae", "best_val_loss"} <= set(
        summary
    )
    assert "confusion_matrix" not in summary and not (run / "confusion.png").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_loss"] == summary["test_loss"] and evaluated["test_mae"] == summary["test_mae"]
    assert main(["list", "tasks", "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == set(TASKS.list())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--task", "regresion"], "unknown task 'regresion'; did you mean 'regression'"),
        (["--task", "regression", "--set", "task.loss=huber"], "task.loss='huber': expected one of mse, l1"),
        (["--set", "task.loss=l1"], "the classification task has no option 'loss'"),
    ],
)
def test_bad_task_settings_are_one_line(overrides, message, tiny_mnist, tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--out", str(tmp_path / "r"), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
