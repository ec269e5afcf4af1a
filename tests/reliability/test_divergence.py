"""Issue 12, #2's NaN guard and #15 for resume points. A checkpoint is never written from non-finite
weights, so the checkpoint that a divergence error calls "last good" is good. The loss is checked once
per epoch (no per-step sync), so before this a mid-epoch resume point (train.checkpoint_steps) could be
written after the weights went NaN. A resume point that parses but is not this run's is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

import trainlab
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import load_checkpoint
from trainlab.training.trainer import TrainingDiverged


class PoisonAt(Callback):
    """Sets one weight to NaN after optimisation step `step` (1-based), as a diverging update would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, step, loss):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("poisoned", [3, 4])  # after an unsaved step, and at a saving step
def test_no_checkpoint_is_written_from_non_finite_weights(tiny_mnist, tmp_path, poisoned):
    cfg = load_config(
        "default",
        ["data.dataset=mnist", "model.name=mlp", "train.epochs=1", "data.batch_size=32", "data.val_size=50",
         "train.device=cpu", "train.checkpoint_steps=2", "train.compile=false"],
    )  # fmt: skip
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="last good checkpoint: .*last.safetensors") as error:
        trainlab.train(cfg, run, callbacks=[PoisonAt(poisoned)], progress=False)
    assert "by step 4" in str(error.value)  # found at the first save after the poison, not at epoch end
    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["global_step"] == 2  # the last resume point before the poison
    assert all(t.isfinite().all() for k, t in tensors.items() if k.startswith("model."))


# ---- resume files that parse but are not this run's (#15) -------------------------------------------
ARGS = ["--dataset", "mnist", "--model", "mlp", "--epochs", "2", "--batch-size", "64",
        "--set", "data.val_size=50", "--device", "cpu", "--quiet"]  # fmt: skip


def killed_after_epoch_1(tmp_path, capsys) -> Path:
    """A run with its epoch-1 resume point, as a kill after that checkpoint leaves it."""
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--set", "train.epochs=1", "--out", str(run)]) == 0
    for name in ("model.safetensors", "summary.json"):
        (run / name).unlink()
    config = json.loads((run / "config.json").read_text())
    config["train"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    return run


def resume_error(run: Path, capsys) -> str:
    code = main(["train", "--resume", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("trainlab: error: "), err
    return err


def test_resume_refuses_a_config_json_that_names_another_model(tiny_mnist, tmp_path, capsys):
    run = killed_after_epoch_1(tmp_path, capsys)
    config = json.loads((run / "config.json").read_text())
    config["model"]["name"] = "cnn"  # config.json copied from another run
    (run / "config.json").write_text(json.dumps(config))
    assert "holds the weights of model 'mlp'" in resume_error(run, capsys)


def test_resume_refuses_a_checkpoint_without_the_trainer_state(tiny_mnist, tmp_path, capsys):
    run = killed_after_epoch_1(tmp_path, capsys)
    last = run / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(last)
    kept = {k: v for k, v in tensors.items() if not k.startswith("optim.")}  # no digest: an older file
    last.write_bytes(save(kept, metadata={"trainlab": json.dumps(meta)}))
    assert "not a resume point of this run" in resume_error(run, capsys)
