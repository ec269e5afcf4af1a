"""A resume point does not depend on the number of processes that wrote it: a run killed mid-epoch on 2
processes resumes on 1, and one killed on 1 resumes on 2, each ending where the 1-process run ends."""

from __future__ import annotations

import csv

from tests.distributed.launching import RUN, assert_same_training, environment, succeeded, trainlab, weights
from tests.tolerance import assert_float32_close
from trainlab.cli import main
from trainlab.io import read_json
from trainlab.training.checkpoint import load_checkpoint


def epochs(run_dir) -> list[dict[str, float]]:
    """metrics.csv's rows (one per epoch) as numbers."""
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((run_dir / "metrics.csv").open())]


def killed_mid_epoch(run_dir) -> None:
    _, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert (meta["global_step"], meta["progress"]["step"]) == (30, 5)  # epoch 2 in flight
    assert not (run_dir / "model.safetensors").exists()


def test_two_process_checkpoint_resumes_on_one_and_one_process_checkpoint_on_two(tiny_mnist, tmp_path):
    data, one = tiny_mnist.parent, tmp_path / "one"
    assert main(["train", *RUN, "--out", str(one)]) == 0

    two_then_one = tmp_path / "two-then-one"
    done = trainlab(
        "train", *RUN, "--out", str(two_then_one), "--nproc", "2", env=environment(data, "1:33:kill")
    )
    assert done.returncode == 2, done.stderr
    killed_mid_epoch(two_then_one)
    assert main(["train", "--resume", str(two_then_one), "--quiet"]) == 0

    one_then_two = tmp_path / "one-then-two"
    done = trainlab("train", *RUN, "--out", str(one_then_two), env=environment(data, "-:33:kill"))
    assert done.returncode < 0, done.stderr  # SIGKILLed
    killed_mid_epoch(one_then_two)
    succeeded(
        trainlab("train", "--resume", str(one_then_two), "--quiet", "--nproc", "2", env=environment(data))
    )

    want = epochs(one)
    for resumed in (two_then_one, one_then_two):
        assert_same_training(weights(one), weights(resumed))
        assert (
            read_json(resumed / "summary.json")["test_accuracy"]
            == read_json(one / "summary.json")["test_accuracy"]
        )
        got = epochs(resumed)  # the epoch in flight's sums counted once, whoever wrote the resume point
        assert [row["train_accuracy"] for row in got] == [row["train_accuracy"] for row in want]
        # a mean of 250 per-sample losses of magnitude < 3, re-associated: within 250 eps of 3
        assert_float32_close(
            [row["train_loss"] for row in got], [row["train_loss"] for row in want], ops=250, scale=3.0
        )
