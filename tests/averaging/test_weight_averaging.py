"""SWA, top-k averaging and snapshot ensembles: their schedules, what they average, their outputs, their
one-line config errors, and an exact resume in the middle of each."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import trainlab
from tests.conftest import Interrupted, StopAt
from tests.tolerance import assert_float32_close
from trainlab.config import ScheduleConfig
from trainlab.data.loader import DeviceLoader
from trainlab.errors import ConfigError
from trainlab.training.averaging import SnapshotEnsemble, StochasticWeightAveraging, TopKAverage
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import load_checkpoint, unprefixed
from trainlab.training.optim import create_schedule, swa_schedule
from trainlab.training.trainer import Trainer

SMALL = {
    "data.dataset": "mnist", "data.limit_train": 256, "data.val_size": 44, "data.batch_size": 64,
    "train.device": "cpu", "data.augment": "hflip,mixup=0.2", "train.checkpoint_steps": 3,
}  # fmt: skip
CNN = {**SMALL, "model.widths": [8, 8, 16], "model.dropout": 0.1}  # the default recipe's model
SNAPSHOT = {**SMALL, "model.widths": [8, 8, 8], "train.epochs": 3, "ensemble.snapshots": 3}  # SpeedNet's


def test_cyclic_cosine_restarts_at_each_cycle():
    f = create_schedule(ScheduleConfig(name="cyclic_cosine", cycles=4), epochs=8)
    for t in (0.0, 0.25, 0.5, 0.75):  # each cycle starts at the peak
        assert f(t) == pytest.approx(1.0, abs=1e-12)
    assert f(0.125) == pytest.approx(0.5, abs=1e-12)  # half way through cycle 1: cos(pi / 2)
    assert f(0.25 - 1e-6) < 1e-9  # the end of a cycle: the lowest learning rate, where the snapshot is
    assert f(0.3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)), abs=1e-12)


def test_swa_schedule_switches_to_its_own_learning_rate_at_swa_start():
    base = create_schedule(ScheduleConfig(name="onecycle", pct_start=0.25), epochs=4)
    constant = swa_schedule(base, epochs=4, start=3, factor=0.2, anneal="constant")
    cyclic = swa_schedule(base, epochs=4, start=3, factor=0.2, anneal="cyclic")
    assert constant(0.3) == base(0.3) and cyclic(0.49) == base(0.49)  # epochs 1 and 2: the schedule
    assert constant(0.5) == constant(0.99) == 0.2  # epochs 3 and 4: the SWA learning rate
    assert cyclic(0.5) == cyclic(0.75) == pytest.approx(0.2)  # each epoch starts at swa_lr ...
    assert cyclic(0.75 - 1e-9) == pytest.approx(0.2 * 0.01, rel=1e-6)  # ... and falls to swa_lr / 100
    assert swa_schedule(base, 4, 3, None, "constant") is base  # no swa_lr: the schedule throughout


class EpochWeights(Callback):
    order = 10  # before the averaging callbacks (30): sees the same weights they see

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, epoch, logs):
        self.seen.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def tiny_trainer(callbacks, epochs=4):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images, labels = (
        torch.randint(0, 256, (96, 1, 4, 4), generator=g, dtype=torch.uint8),
        torch.arange(96) % 3,
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), epochs=epochs, callbacks=callbacks)
    loader = DeviceLoader(images, labels, 16, shuffle=True, seed=0)
    return trainer, loader, DeviceLoader(images[:48], labels[:48], 48)


def test_swa_averages_the_weights_of_the_epochs_from_swa_start():
    weights, swa = EpochWeights(), StochasticWeightAveraging(start=2)
    trainer, loader, val = tiny_trainer([weights, swa])
    trainer.fit(loader, val)
    averaged = trainer.averaged_model.state_dict()
    assert swa.count == 3 and [h["swa_models"] for h in trainer.history[1:]] == [1, 2, 3]
    for key, value in averaged.items():
        if value.is_floating_point():  # 3 running-mean updates of 4 roundings each (alpha, -, x, +)
            seen = torch.stack([w[key] for w in weights.seen[1:]]).double()
            assert_float32_close(value, seen.mean(0), ops=12, scale=seen.abs().max(0).values)
    assert trainer.eval_model is trainer.averaged_model and trainer.averaged_model is not trainer.model


def test_top_k_averages_the_best_epochs_by_validation_accuracy():
    weights, top = EpochWeights(), TopKAverage(k=2)
    trainer, loader, val = tiny_trainer([weights, top], epochs=5)
    trainer.fit(loader, val)
    accuracy = [h["val_accuracy"] for h in trainer.history]
    best = sorted(range(5), key=lambda e: (-accuracy[e], e))[:2]
    assert sorted(c["epoch"] for c in top.kept) == sorted(e + 1 for e in best)
    key = "1.weight"
    a, b = weights.seen[best[0]][key].double(), weights.seen[best[1]][key].double()
    # a + (b - a) / 2 in float32: a subtraction, a product and an addition, each rounded to within
    # u of at most max(|a|, |b|) (a and b may nearly cancel, so not of the mean)
    assert_float32_close(
        trainer.averaged_model.state_dict()[key], (a + b) / 2, ops=3, scale=a.abs().max(b.abs())
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.ema": 0.9, "train.swa_start": 2}, r"train\.ema=0\.9 and train\.swa_start=2: .* choose one"),
        ({"train.swa_lr": 0.05}, r"train\.swa_lr=0\.05: set train\.swa_start=K too"),
        ({"train.swa_start": 9}, r"train\.swa_start=9: after the last epoch; expected 1 to train\.epochs=5"),
        ({"ensemble.snapshots": 3}, r"ensemble\.snapshots=3 .* expected schedule\.name=cyclic_cosine"),
        ({"ensemble.snapshots": 3, "schedule.name": "cyclic_cosine", "schedule.cycles": 2},
         r"schedule\.cycles=2: expected the same number"),
        ({"train.average_top_k": 2, "data.val_size": 0}, r"data\.val_size=0 leaves no validation split"),
        ({"ensemble.snapshots": 3, "ensemble.members": 2}, r"members=2: a snapshot ensemble .* choose one"),
        ({"train.swa_anneal": "linear"}, r"train\.swa_anneal.*one of 'constant', 'cyclic'"),
    ],
)  # fmt: skip
def test_averaging_settings_that_cannot_work_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        trainlab.train(trainlab.load_config("default", overrides), progress=False)
    assert "\n" not in str(error.value)


def interrupted_then_resumed(cfg, run_dir, step):
    with pytest.raises(Interrupted):
        trainlab.train(cfg, run_dir, callbacks=[StopAt(step)], progress=False)
    assert not (run_dir / "summary.json").exists()
    meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")[1]
    trainlab.train(cfg, run_dir, resume=True, progress=False)
    return meta


def same_files(a, b, names):
    for name in names:
        want, got = load_checkpoint(a / name)[0], load_checkpoint(b / name)[0]
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name


def test_resume_mid_swa_is_bit_identical(tiny_mnist, tmp_path, no_report):
    """4 steps an epoch, a resume point every 3 steps: stopped at step 11 (epoch 3, mid-SWA), resumed
    from step 9, the run ends with the weights, SWA average and statistics of the uninterrupted one."""
    cfg = trainlab.load_config(
        "default", {**CNN, "train.epochs": 4, "train.swa_start": 2, "train.swa_lr": 0.05}
    )
    trainlab.train(cfg, tmp_path / "reference", progress=False)
    meta = interrupted_then_resumed(cfg, tmp_path / "resumed", step=11)
    assert meta["global_step"] == 9 and meta["callbacks"]["StochasticWeightAveraging"]["count"] == 1
    same_files(tmp_path / "reference", tmp_path / "resumed", ["model.safetensors"])
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("reference", "resumed")]
    assert summaries[0]["test_loss"] == summaries[1]["test_loss"]


def test_snapshot_run_writes_its_snapshots_and_resumes_mid_cycle_bit_identically(
    tiny_mnist, tmp_path, no_report
):
    """The snapshots are model files named in an ensemble.json; stopped at step 7 (cycle 2 of 3) and
    resumed from step 6, with one snapshot taken and carried in the checkpoint, the run ends with every
    snapshot file and the model bit for bit those of the uninterrupted run."""
    cfg = trainlab.load_config("snapshot", SNAPSHOT)
    result = trainlab.train(cfg, tmp_path / "reference", progress=False)
    run = tmp_path / "reference"
    manifest = json.loads((run / "ensemble.json").read_text())
    assert manifest["format"] == "trainlab-ensemble" and manifest["combine"] == "mean_prob"
    paths = [m["path"] for m in manifest["members"]]
    assert paths == [f"snapshots/snapshot-{k}.safetensors" for k in (1, 2, 3)]
    snapshots = [unprefixed("model", load_checkpoint(run / p)[0]) for p in paths]
    final = unprefixed("model", load_checkpoint(run / "model.safetensors")[0])
    assert all(torch.equal(final[k], snapshots[-1][k]) for k in final)  # the last cycle's end is the model
    last_layer = list(final)[-1]
    assert not torch.equal(snapshots[0][last_layer], snapshots[1][last_layer])
    assert result.summary["snapshots"] == 3 and len(result.summary["member_test_accuracy"]) == 3
    assert [m["val_accuracy"] for m in manifest["members"]] == result.summary["member_val_accuracy"]
    # the run's test metrics are the ensemble's: a fresh evaluation of the directory gives them again
    from trainlab.predict import evaluate_run

    assert trainlab.evaluate_run(run, "cpu")["test_loss"] == result.summary["test_loss"]
    assert result.summary["test_loss"] not in [
        evaluate_run(run, "cpu")["test_loss"]  # the last snapshot alone (model.safetensors)
    ]
    lrs = [float(line.split(",")[3]) for line in (run / "steps.csv").read_text().splitlines()[1:]]
    assert lrs[0] == lrs[4] == lrs[8] == cfg.optim.lr  # 4 steps an epoch, a cycle an epoch: restarts

    meta = interrupted_then_resumed(cfg, tmp_path / "resumed", step=7)
    assert meta["global_step"] == 6 and len(meta["callbacks"]["SnapshotEnsemble"]["taken"]) == 1
    names = ["model.safetensors", *(f"snapshots/snapshot-{k}.safetensors" for k in (1, 2, 3))]
    same_files(tmp_path / "reference", tmp_path / "resumed", names)


def test_snapshot_callback_takes_one_snapshot_per_cycle_whatever_the_epoch_count():
    snapshots = SnapshotEnsemble(4)
    trainer, loader, val = tiny_trainer([snapshots], epochs=3)  # 6 steps an epoch, 18 in all
    trainer.fit(loader, val)
    assert [t["step"] for t in snapshots.taken] == [5, 9, 14, 18]  # after floor(4 s / 18) steps up
