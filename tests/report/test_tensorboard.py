"""Issue 19, TensorBoard: `trainlab train --tensorboard` writes RUN/tensorboard, read back here with
TensorBoard's own EventAccumulator: the per-epoch scalars are metrics.csv's values, the per-step
losses are one per step and average to each epoch's training loss, the learning rate is the schedule's,
the hparams are in the same run as the scalars, histograms come with diagnostics, and a resumed run
shows every step once. Runs are tiny: the generated 'mnist' of tests/conftest.py, an MLP, 5 steps an
epoch (250 training images, batch 50)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

import trainlab
from tests.tolerance import EPS, assert_float32_close
from trainlab.cli import main
from trainlab.config import Config
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import load_checkpoint
from trainlab.training.optim import create_schedule

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

STEPS = 5  # per epoch: 300 - 50 validation images, in batches of 50
ARGS = ["--dataset", "mnist", "--model", "mlp", "--batch-size", "50", "--set", "data.val_size=50",
        "--device", "cpu", "--quiet", "--tensorboard"]  # fmt: skip
SMALL = {"data.dataset": "mnist", "model.name": "mlp", "data.batch_size": 50, "data.val_size": 50,
         "train.device": "cpu", "log.tensorboard": True}  # fmt: skip
CSV_DIGITS = 5e-6  # metrics.csv holds 6 significant digits: within half a unit of the 6th, relatively


def events(run: Path) -> EventAccumulator:
    """The run's events as TensorBoard shows them: every value kept, purges applied."""
    return EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0}).Reload()


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    found = acc.Scalars(tag)
    steps = [e.step for e in found]
    assert len(steps) == len(set(steps)), f"{tag}: two values for one step in {steps}"
    return {e.step: e.value for e in found}


def metrics_csv(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def scheduled_lrs(run: Path, steps: int) -> list[float]:
    """The lr of steps 1..steps by the run's config, as `lr = peak * factor(step / total_steps)` says."""
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    factor = create_schedule(cfg.schedule, cfg.train.epochs)
    total = cfg.train.epochs * STEPS
    return [cfg.optim.lr * factor(min((n - 1) / total, 1.0)) for n in range(1, steps + 1)]


def test_events_hold_the_metrics_the_step_losses_the_schedule_and_the_hparams(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--epochs", "2", "--out", str(run)]) == 0
    acc, rows = events(run), metrics_csv(run)

    # Every metrics.csv column, once per epoch, at the step that ends the epoch.
    for name in [c for c in rows[0] if c != "epoch"]:
        logged = scalars(acc, f"epoch/{name}")
        assert list(logged) == [STEPS * int(row["epoch"]) for row in rows], name
        for value, row in zip(logged.values(), rows):
            assert abs(value - row[name]) <= (CSV_DIGITS + EPS) * abs(row[name]), (name, value, row[name])

    # One loss per step, 1 to 10, and each epoch's steps average to its train_loss (batches of one size).
    losses = scalars(acc, "train/loss")
    assert list(losses) == list(range(1, 2 * STEPS + 1))
    for row in rows:
        epoch = [
            losses[s] for s in range(STEPS * int(row["epoch"]) - STEPS + 1, STEPS * int(row["epoch"]) + 1)
        ]
        assert abs(sum(epoch) / STEPS - row["train_loss"]) <= (CSV_DIGITS + STEPS * EPS) * max(epoch)

    # The lr each step used: the schedule's, a onecycle that rises and falls within these 10 steps.
    lrs = scalars(acc, "train/lr")
    assert list(lrs) == list(range(1, 2 * STEPS + 1))
    expected = scheduled_lrs(run, 2 * STEPS)
    assert_float32_close(list(lrs.values()), expected, ops=1, scale=torch.tensor(expected))
    assert len(set(lrs.values())) > 2 * STEPS - 2  # it changes every step (not one value per epoch)

    # The hparams: in the one run that holds the scalars, not in a sub-directory of their own.
    assert [p for p in (run / "tensorboard").iterdir() if p.is_dir()] == []
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert start.hparams["model.name"].string_value == "mlp"
    assert start.hparams["data.batch_size"].number_value == 50
    assert json.loads(start.hparams["model.options"].string_value) == {}  # a table, as JSON text
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert set(metric_tags) == {f"epoch/{c}" for c in rows[0] if c != "epoch"}
    assert set(metric_tags) <= set(acc.Tags()["scalars"])
    assert acc.Tags()["histograms"] == []  # diagnostics off


def test_diagnostics_add_weight_and_gradient_histograms_of_every_parameter(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--epochs", "1", "--diagnose", "--out", str(run)]) == 0
    acc = events(run)
    tensors, _ = load_checkpoint(run / "model.safetensors")
    params = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = {f"{kind}/{name}" for name in params for kind in ("weights", "gradients")}
    assert set(acc.Tags()["histograms"]) == expected
    for name, weight in params.items():
        (event,) = acc.Histograms(f"weights/{name}")
        h = event.histogram_value
        assert event.step == STEPS and h.num == weight.numel()
        assert (h.min, h.max) == (weight.min().item(), weight.max().item())
        assert_float32_close(h.sum, weight.double().sum(), ops=weight.numel(), scale=weight.abs().sum())
        (grad,) = acc.Histograms(f"gradients/{name}")
        assert grad.step == STEPS and grad.histogram_value.num == weight.numel()
        assert grad.histogram_value.sum != h.sum  # the gradient, not the weight again


class Interrupt(Callback):
    """Dies at the end of epoch 2 after the TensorBoard logger has written it (order 60) and before the
    checkpoint (order 90): the resume repeats steps that the events already hold."""

    order = 70

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 2:
            raise RuntimeError("interrupted")


def raw_events(run: Path) -> list:
    """Every event of every file, purged or not, in the order TensorBoard reads the files (by name)."""
    return [e for f in sorted((run / "tensorboard").iterdir()) for e in EventFileLoader(str(f)).Load()]


def raw_steps(run: Path, tag: str) -> list[int]:
    return [e.step for e in raw_events(run) if any(v.tag == tag for v in e.summary.value)]


def test_a_resumed_run_appends_and_holds_one_value_per_step(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    # Epoch 2 has a resume point after its first step (global step 6), and dies after it is logged.
    cfg = trainlab.load_config("default", {**SMALL, "train.epochs": 3, "train.checkpoint_steps": 6})
    with pytest.raises(RuntimeError, match="interrupted"):
        trainlab.train(cfg, run, callbacks=[Interrupt()], progress=False)
    assert raw_steps(run, "train/loss") == list(range(1, 2 * STEPS + 1))
    trainlab.train(cfg, run, resume=True, progress=False)

    # The resume trains steps 7 to 10 again and logs epoch 2, steps 6 to 10, again: shown once each.
    assert raw_steps(run, "train/loss").count(7) == 2
    restarts = [e.step for e in raw_events(run) if e.HasField("session_log")]
    assert restarts == [1, STEPS + 1]  # the second file, read last, purges from step 6 on
    acc, rows = events(run), metrics_csv(run)
    losses, lrs = scalars(acc, "train/loss"), scalars(acc, "train/lr")
    assert list(losses) == list(lrs) == list(range(1, 3 * STEPS + 1))
    expected = scheduled_lrs(run, 3 * STEPS)  # step 6's lr came back from the checkpoint
    assert_float32_close(list(lrs.values()), expected, ops=1, scale=torch.tensor(expected))
    logged = scalars(acc, "epoch/train_loss")
    assert list(logged) == [STEPS, 2 * STEPS, 3 * STEPS]
    for value, row in zip(logged.values(), rows):
        assert abs(value - row["train_loss"]) <= (CSV_DIGITS + EPS) * row["train_loss"]

    # A new run in its place starts the events afresh: the old files go with the old run.
    trainlab.train(cfg.set("train.epochs", 1), run, overwrite=True, progress=False)
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert raw_steps(run, "train/loss") == list(range(1, STEPS + 1))


def test_without_the_extra_the_flag_is_one_line_naming_it_and_a_plain_run_needs_none(
    tiny_mnist, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it raises ImportError
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--epochs", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trainlab: error: log.tensorboard "), err
    assert "pip install 'trainlab[tensorboard]'" in err
    assert not run.exists()  # refused before the run directory is touched

    plain = [a for a in ARGS if a != "--tensorboard"]
    assert main(["train", *plain, "--epochs", "1", "--out", str(run)]) == 0
    assert (run / "summary.json").exists() and not (run / "tensorboard").exists()
