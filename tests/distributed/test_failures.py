"""A rank that fails, by SIGKILL or by an exception, ends the job with one line naming it (never a hang),
and the killed run resumes to exactly the uninterrupted run: same weights, bit for bit, same logs."""

from __future__ import annotations

import csv

import torch

from tests.distributed.launching import RUN, environment, succeeded, trainlab, weights
from trainlab.training.checkpoint import load_checkpoint


def logged(path):
    """metrics.csv or steps.csv without its wall-clock column."""
    rows = list(csv.DictReader(path.open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_rank_killed_mid_epoch_fails_in_one_line_and_the_resume_is_bit_identical(tiny_mnist, tmp_path):
    data, reference, killed = tiny_mnist.parent, tmp_path / "reference", tmp_path / "killed"
    succeeded(trainlab("train", *RUN, "--out", str(reference), "--nproc", "2", env=environment(data)))

    # rank 1 is SIGKILLed before step 33: epoch 2 (steps 26 to 50) is in flight, resume point at step 30
    done = trainlab("train", *RUN, "--out", str(killed), "--nproc", "2", env=environment(data, "1:33:kill"))
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("trainlab: error: rank 1 failed (killed by SIGKILL)")
    )
    assert "Traceback" not in done.stderr, done.stderr
    _, meta = load_checkpoint(killed / "checkpoints" / "last.safetensors")
    assert (meta["epoch"], meta["global_step"], meta["progress"]["step"]) == (1, 30, 5)
    assert not (killed / "model.safetensors").exists()

    succeeded(trainlab("train", "--resume", str(killed), "--quiet", "--nproc", "2", env=environment(data)))
    want, got = weights(reference), weights(killed)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    for log in ("metrics.csv", "steps.csv"):
        assert logged(killed / log) == logged(reference / log), log


def test_a_rank_that_raises_ends_the_job_naming_it(tiny_mnist, tmp_path):
    env = environment(tiny_mnist.parent, "0:12:raise")
    done = trainlab("train", *RUN, "--out", str(tmp_path / "run"), "--nproc", "2", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("trainlab: error: rank 0 failed (exit code 1)")
    assert "RuntimeError: injected failure at step 12" in done.stderr  # the rank's own report, above


def test_an_unfreeze_under_ddp_is_refused_in_one_line(tiny_mnist, tmp_path):
    """DDP registers the parameters that train when it wraps the model: a stage unfrozen later would
    never be synchronised, and the ranks' weights would drift apart silently. Refused, not drifting."""
    overrides = ("--set", "train.freeze=backbone", "--set", "train.unfreeze_at=2")
    env = environment(tiny_mnist.parent)
    done = trainlab("train", *RUN, *overrides, "--out", str(tmp_path / "run"), "--nproc", "2", env=env)
    assert done.returncode == 2, done.stderr
    assert "train.unfreeze_at=2 with 2 processes" in done.stderr
    assert "Traceback" not in done.stderr
