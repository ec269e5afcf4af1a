"""The run report's parts: steps.csv from the per-step logger, the git commit read without git, the
gallery's choice of images, the activation maps' stages, and the tables of a real (tiny) run against
its summary.json."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from tests.tolerance import EPS
from trainlab.data.loader import DeviceLoader
from trainlab.models import create_model
from trainlab.report.environment import git_commit
from trainlab.report.filters import stage_activations
from trainlab.report.gallery import Prediction, confident_mistakes, random_predictions
from trainlab.report.html import read_steps
from trainlab.training.callbacks import StepLogger
from trainlab.training.trainer import Callback, Trainer


def small_trainer(tmp_path, epochs: int, schedule=None, extra=()) -> tuple[Trainer, DeviceLoader]:
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 3, (96,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    loader = DeviceLoader(images, labels, 32, shuffle=True, drop_last=True, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    callbacks = [StepLogger(tmp_path / "steps.csv"), *extra]
    trainer = Trainer(
        model, opt, epochs=epochs, schedule=schedule, callbacks=callbacks, stateful={"loader": loader}
    )
    return trainer, loader


class Interrupt(Exception):
    pass


class StopAt(Callback):
    """Keeps the trainer's state after global step `step` and stops there, as a kill would."""

    order = 95

    def __init__(self, step: int):
        self.step, self.state = step, None

    def on_train_batch_end(self, trainer, step, loss):
        if trainer.global_step == self.step:
            self.state = trainer.state()
            raise Interrupt


def test_steps_csv_holds_every_step_and_its_mean_is_the_epoch_loss(tmp_path):
    trainer, loader = small_trainer(tmp_path, epochs=3, schedule=lambda t: 1.0 - t)
    history = trainer.fit(loader)
    steps = read_steps(tmp_path / "steps.csv")
    assert [s["step"] for s in steps] == list(range(1, 10)) and [s["epoch"] for s in steps] == [1] * 3 + [
        2
    ] * 3 + [3] * 3
    for epoch, logs in enumerate(history, 1):
        losses = [s["loss"] for s in steps if s["epoch"] == epoch]  # equal batches: the plain mean
        assert abs(sum(losses) / 3 - logs["train_loss"]) <= 8 * EPS * max(losses) + 1e-6 * logs["train_loss"]
    # the schedule is applied before each step, at the steps done so far: lr = 0.1 * (1 - (step - 1) / 9)
    assert [s["lr"] for s in steps] == pytest.approx([0.1 * (1 - k / 9) for k in range(9)], rel=1e-5)


def test_steps_csv_of_a_run_resumed_mid_epoch_is_that_of_an_uninterrupted_one(tmp_path):
    schedule = lambda t: 1.0 - t  # noqa: E731
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    small_trainer(tmp_path / "a", 3, schedule)[0].fit(small_trainer(tmp_path / "a", 3, schedule)[1])
    stop = StopAt(5)  # in the middle of epoch 2
    first, loader = small_trainer(tmp_path / "b", 3, schedule, [stop])
    with pytest.raises(Interrupt):
        first.fit(loader)
    second, loader = small_trainer(tmp_path / "b", 3, schedule)
    second.load_state(*stop.state)
    second.fit(loader)
    assert (tmp_path / "b" / "steps.csv").read_text() == (tmp_path / "a" / "steps.csv").read_text()


def test_git_commit_is_read_from_the_files_without_git(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "ab" * 20 + " refs/heads/main\n")
    source = tmp_path / "repo" / "trainlab"
    source.mkdir()
    assert git_commit(source) == "ab" * 20  # only in packed-refs
    (git / "refs" / "heads" / "main").write_text("cd" * 20 + "\n")
    assert git_commit(source) == "cd" * 20  # a loose ref wins over the packed one
    (git / "HEAD").write_text("ef" * 20 + "\n")
    assert git_commit(source) == "ef" * 20  # detached
    assert git_commit(tmp_path / "elsewhere") == "unknown"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed: nothing to compare with")
def test_git_commit_of_this_checkout_agrees_with_git():
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    assert git_commit() == done.stdout.strip()


def test_confident_mistakes_are_the_wrong_predictions_with_the_highest_probability():
    preds = [Prediction(0, 1, 1, 0.99, 0.99), Prediction(1, 0, 2, 0.6, 0.1), Prediction(2, 0, 1, 0.9, 0.05)]
    preds += [Prediction(3, 2, 0, 0.6, 0.2), Prediction(4, 2, 2, 0.5, 0.5)]
    assert [p.index for p in confident_mistakes(preds, 2)] == [2, 1]  # 0.9, then the earlier of two 0.6
    assert [p.index for p in confident_mistakes(preds, 10)] == [2, 1, 3]
    sample = random_predictions(preds, 3, seed=5)
    assert sample == random_predictions(preds, 3, seed=5) and len({p.index for p in sample}) == 3


def test_lenet5_stages_give_one_activation_map_per_filter():
    """Lecture: 6 filters of the first convolution give 6 activation maps of 28x28 (padding 2)."""
    torch.manual_seed(0)
    model = create_model("lenet5", in_channels=1, image_size=28, num_classes=10)
    stages = stage_activations(model, torch.randn(1, 1, 28, 28))
    shapes = [tuple(maps.shape) for _, maps in stages]
    assert shapes[0] == (6, 28, 28) and (16, 10, 10) in shapes
    assert all(a[1:] != b[1:] for a, b in zip(shapes, shapes[1:]))  # a stage ends where the size changes
    assert model.training  # put back as it was


class Tables(HTMLParser):
    """The text of each cell of each <table id=...>, row by row."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id"):
            self.current = dict(attrs)["id"]
            self.tables[self.current] = []
        elif tag == "tr" and self.current:
            self.tables[self.current].append([])
        elif tag in ("td", "th") and self.current:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.current:
            self.tables[self.current][-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def shown_number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_report_tables_hold_the_runs_numbers(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    parser = Tables()
    parser.feed((tiny_run / "report.html").read_text())
    metrics = {row[0]: row[1:] for row in parser.tables["metrics"] if len(row) == 3}
    checked = 0
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed":
            shown, unit = metrics[key.replace("_", " ")]
            if isinstance(value, float) and math.isnan(value):
                assert shown == "n/a"
                continue
            scale, places = {"%": (100, 2), "s": (1, 2)}.get(unit, (1, 4))
            if isinstance(value, int):
                assert shown_number(shown) == value, key
            else:  # as rounded for display: within half a unit in the last place shown
                assert abs(shown_number(shown) - scale * value) <= 0.5 * 10**-places + 1e-9, key
            checked += 1
    assert checked >= 12 and metrics["test accuracy"][1] == "%"
    confusion = summary["confusion_matrix"]
    rows = parser.tables["per-class"][1:]
    assert len(rows) == len(confusion)
    for row, counts in zip(rows, confusion):
        accuracy = 100 * counts[rows.index(row)] / sum(counts)
        assert abs(shown_number(row[1]) - accuracy) <= 0.005 + 1e-9 and shown_number(row[4]) == sum(counts)
    environment = dict(row for row in parser.tables["environment"])
    assert environment["torch"] == torch.__version__ and environment["device"] == summary["device"]
    assert len(environment["trainlab commit"]) == 40 or environment["trainlab commit"] == "unknown"
