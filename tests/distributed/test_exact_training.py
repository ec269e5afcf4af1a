"""N processes at a per-rank batch of B/N train the weights that one process trains at batch B."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from tests.distributed.launching import (
    RUN,
    assert_same_training,
    environment,
    record_model_inputs,
    succeeded,
    trainlab,
    weights,
)
from trainlab.cli import main
from trainlab.training.trainer import Trainer


def test_two_ranks_at_half_batch_train_the_weights_of_one_process(tiny_mnist, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setattr(Trainer, "model_input", Trainer.model_input)  # undone after the test
    save_inputs = record_model_inputs(tmp_path / "inputs-one.safetensors", at_exit=False)
    assert main(["train", *RUN, "--out", str(one)]) == 0
    env = {**environment(tiny_mnist.parent), "TRAINLAB_TEST_RECORD": str(tmp_path / "inputs")}
    succeeded(trainlab("train", *RUN, "--out", str(two), "--nproc", "2", env=env))
    assert_same_training(weights(one), weights(two))

    # each rank trained on its half of each global batch, the very images (augmented) of one process
    save_inputs()  # the subprocesses wrote theirs when they ended
    single = load_file(tmp_path / "inputs-one.safetensors")
    ranks = [load_file(tmp_path / f"inputs-rank{r}.safetensors") for r in (0, 1)]
    assert single["sizes"].tolist() == [10] * 50
    assert all(r["sizes"].tolist() == [5] * 50 for r in ranks)
    halves = [r["rows"].view(50, 5) for r in ranks]
    assert torch.equal(torch.cat(halves, 1), single["rows"].view(50, 10))
