"""A resume past an unfreeze restores the frozen state and the learning-rate groups exactly
(Lightning #21901: a resumed run silently re-froze layers)."""

from __future__ import annotations

import torch

from tests.transfer.conftest import TARGET_KEYS
from trainlab.config import load_config
from trainlab.run import train
from trainlab.training.checkpoint import load_checkpoint

KEYS = {
    **TARGET_KEYS,
    "model.init": None,
    "train.freeze": "backbone",
    "train.unfreeze_at": 2,
    "optim.lr_mult": 0.1,
    "schedule.name": "constant",  # a longer resumed run then follows the same curve as the fresh one
}


def optimiser_groups(run):
    groups = load_checkpoint(run / "checkpoints" / "last.safetensors")[1]["optim"]["param_groups"]
    return [{k: v for k, v in g.items()} for g in groups]


def test_resume_past_the_unfreeze_is_the_uninterrupted_run(source_run, tmp_path):
    keys = {**KEYS, "model.pretrained": str(source_run)}
    whole = train(load_config("cpu-fast", {**keys, "train.epochs": 3}), tmp_path / "whole", progress=False)
    # stopped after epoch 2 (the unfreeze epoch), then resumed for epoch 3; the source is gone by then
    train(load_config("cpu-fast", {**keys, "train.epochs": 2}), tmp_path / "cut", progress=False)
    resumed_cfg = load_config("cpu-fast", {**keys, "train.epochs": 3})
    resumed = train(resumed_cfg, tmp_path / "cut", resume=True, progress=False)

    grads = lambda m: {n: p.requires_grad for n, p in m.named_parameters()}  # noqa: E731
    assert grads(resumed.model) == grads(whole.model) and all(grads(resumed.model).values())
    assert optimiser_groups(tmp_path / "cut") == optimiser_groups(tmp_path / "whole")
    stage_lrs = [g["lr"] for g in optimiser_groups(tmp_path / "whole") if g["stage_index"] is not None]
    assert stage_lrs and all(lr > 0 for lr in stage_lrs)  # warmed up and training
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_before_the_unfreeze_the_stage_groups_have_no_rate(source_run, tmp_path):
    keys = {**KEYS, "model.pretrained": str(source_run), "train.epochs": 1}
    train(load_config("cpu-fast", keys), tmp_path / "one", progress=False)
    groups = optimiser_groups(tmp_path / "one")
    assert {g["lr"] for g in groups if g["stage_index"] is not None} == {0.0}
    assert {g["lr"] for g in groups if g["stage_index"] is None} == {KEYS.get("optim.lr", 0.2)}
