"""Trainer behaviour: it learns, schedules follow their formulas, soft targets, NaN guard, early
stopping, callbacks order, checkpoints round-trip without pickle, seeds are bit-exact on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from trainlab.config import ScheduleConfig, load_config
from trainlab.run import train
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import load_checkpoint, save_checkpoint
from trainlab.training.optim import create_schedule
from trainlab.training.trainer import TrainingDiverged

SMALL = {
    "model.name": "mlp",
    "data.batch_size": 128,
    "optim.lr": 0.05,
    "train.epochs": 2,
    "data.val_size": 500,
    "data.limit_train": 2000,
    "train.device": "cpu",
}


def small_config(**extra):
    return load_config("default", {**SMALL, **extra})


def test_learns_fashion_mnist_and_writes_the_run_directory(tmp_path):
    result = train(small_config(**{"train.epochs": 3}), tmp_path / "run", progress=False)
    assert result.summary["test_accuracy"] > 0.75  # 2,000 images, 3 epochs of the lectures' MLP
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for name in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
        "curves.png",
        "report.html",
    ):
        assert (tmp_path / "run" / name).exists(), name
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,train_loss")
    report = (tmp_path / "run" / "report.html").read_text()
    assert "data:image/png;base64," in report and "Confusion matrix" in report


def test_same_seed_gives_bit_identical_weights_on_cpu():
    cfg = small_config(**{"train.epochs": 1, "model.dropout": 0.2})
    a, b = train(cfg, progress=False).model.state_dict(), train(cfg, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(small_config(**{"train.epochs": 1, "model.dropout": 0.2, "train.seed": 1}), progress=False)
    assert not torch.equal(a["net.1.weight"], c.model.state_dict()["net.1.weight"])


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "onecycle"])
def test_schedules_follow_their_formulas(name):
    cfg = ScheduleConfig(
        name=name, warmup_epochs=1, step_epochs=2, gamma=0.5, pct_start=0.25, final_lr_frac=0.0
    )
    f = create_schedule(cfg, epochs=10)
    expected = {
        "constant": [1.0, 1.0, 1.0, 1.0],
        "step": [1.0, 0.5**1, 0.5**2, 0.5**4],  # t = 0, 0.25, 0.45, 0.95 of 10 epochs
        "cosine": [
            0.0,
            0.5 * (1 + math.cos(math.pi * 0.15 / 0.9)),
            0.5 * (1 + math.cos(math.pi * 0.35 / 0.9)),
            None,
        ],
        "onecycle": [0.1, 1.0, 1 - 0.2 / 0.75, 1 - 0.7 / 0.75],
    }[name]
    for t, want in zip([0.0, 0.25, 0.45, 0.95], expected):
        if want is not None:
            assert f(t) == pytest.approx(want, abs=1e-9), (name, t)
    if name == "cosine":
        assert f(1.0) == pytest.approx(0.0, abs=1e-12) and f(0.05) == pytest.approx(0.5)


def test_soft_targets_and_label_smoothing_are_accepted():
    from trainlab.tasks.classification import cross_entropy

    logits = torch.randn(4, 3)
    hard = torch.tensor([0, 2, 1, 1])
    soft = torch.nn.functional.one_hot(hard, 3).float()
    assert cross_entropy(logits, soft).item() == pytest.approx(cross_entropy(logits, hard).item(), abs=1e-6)
    smoothed = cross_entropy(logits, hard, 0.3).item()
    manual = -(((0.7 * soft + 0.1) * logits.log_softmax(1)).sum(1)).mean().item()
    assert smoothed == pytest.approx(manual, abs=1e-6)


def test_nan_guard_names_the_step_and_checkpoint(tmp_path):
    cfg = small_config(
        **{"optim.lr": 1e6, "optim.momentum": 0.0, "schedule.name": "constant", "train.epochs": 3}
    )
    with pytest.raises(TrainingDiverged, match=r"non-finite at step \d+ \(epoch \d\); last good checkpoint"):
        train(cfg, tmp_path / "run", progress=False)


def test_early_stopping_stops_and_restores_best(tmp_path):
    cfg = small_config(**{"train.epochs": 30, "train.early_stopping": 1, "train.min_delta": 1.0})
    result = train(cfg, None, progress=False)
    assert len(result.history) == 2  # no improvement of 1.0 accuracy is possible after epoch 1


class Recorder(Callback):
    def __init__(self, order, log):
        self.order, self.log = order, log

    def on_train_begin(self, trainer):
        self.log.append(("begin", self.order))

    def on_train_batch_end(self, trainer, step, loss):
        assert isinstance(loss, torch.Tensor)  # device tensors, no sync

    def on_epoch_end(self, trainer, epoch, logs):
        self.log.append(("epoch", self.order, epoch, sorted(logs)))


def test_callbacks_run_in_order_with_epoch_logs():
    log = []
    train(
        small_config(**{"train.epochs": 1}), callbacks=[Recorder(5, log), Recorder(-5, log)], progress=False
    )
    assert [entry[:2] for entry in log] == [("begin", -5), ("begin", 5), ("epoch", -5), ("epoch", 5)]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "epoch"} <= set(
        log[-1][3]
    )


def test_checkpoint_round_trip_is_pickle_free(tmp_path):
    tensors = {"model.w": torch.randn(3, 4), "rng.torch": torch.get_rng_state()}
    meta = {"epoch": 3, "history": [{"loss": 0.5}]}
    save_checkpoint(tmp_path / "c.safetensors", tensors, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded_meta == meta and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert b"pickle" not in (tmp_path / "c.safetensors").read_bytes()[:200]
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_auxiliary_heads_add_their_weighted_loss():
    from trainlab.tasks.base import AUX_LOSS_WEIGHT
    from trainlab.training.trainer import Trainer

    torch.manual_seed(0)
    logits, aux = torch.randn(8, 10), torch.randn(8, 10)

    class WithAux(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return (logits * self.scale, aux * self.scale)

    model = WithAux()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), epochs=1)
    labels = torch.randint(0, 10, (8,))
    sums = trainer.task.metric_sums(trainer.device)
    loss = trainer.train_step(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), labels, sums)
    f = torch.nn.functional.cross_entropy
    assert loss.item() == pytest.approx(
        (f(logits, labels) + AUX_LOSS_WEIGHT * f(aux, labels)).item(), rel=1e-6
    )
