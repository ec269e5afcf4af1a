"""The experiment's verdicts come from the numbers: the rule on synthetic differences, and a verdict
that flips when the source model is replaced by random weights (a tiny protocol)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.transfer.conftest import SOURCE_KEYS
from trainlab.config import load_config
from trainlab.experiments.stats import combine_verdicts as combine
from trainlab.experiments.transfer import Protocol, measure_runs, paired, recommendations
from trainlab.models import create_model
from trainlab.run import train
from trainlab.training.checkpoint import load_checkpoint, prefixed, save_checkpoint


def runs(*accuracies):
    return [{"diverged": a is None, "accuracy": a} for a in accuracies]


def test_paired_verdicts_follow_the_interval():
    assert paired(runs(0.9, 0.91, 0.92), runs(0.8, 0.8, 0.81))["verdict"] == "supported"
    assert paired(runs(0.7, 0.71, 0.72), runs(0.8, 0.8, 0.81))["verdict"] == "not supported"
    assert paired(runs(0.9, 0.7, 0.85), runs(0.8, 0.8, 0.8))["verdict"] == "inconclusive"
    diverged = paired(runs(0.9, None, None), runs(0.8, 0.8, 0.8))
    assert diverged["verdict"] == "inconclusive" and diverged["diverged"] == 2 and diverged["pairs"] == 1


def test_combined_verdicts():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "not supported"]) == "mixed"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["not supported"]) == "not supported"


@pytest.mark.slow
def test_a_random_source_flips_the_large_different_verdict(tmp_path):
    """A source trained on the target's own classes reaches scratch's accuracy in half the epochs; the
    same network with its weights re-drawn at random does not."""
    good = tmp_path / "good"
    keys = {**SOURCE_KEYS, "data.dataset": "fashion-mnist:classes=5-9", "data.limit_train": 2048}
    train(load_config("cpu-fast", keys), good, progress=False)
    bad = tmp_path / "random"
    shutil.copytree(good, bad)
    tensors, meta = load_checkpoint(good / "model.safetensors")
    torch.manual_seed(0)
    fresh = create_model("speednet", num_classes=5, widths=[8, 16, 16]).state_dict()
    save_checkpoint(bad / "model.safetensors", {**tensors, **prefixed("model", fresh)}, meta)

    protocol = Protocol(seeds=3, limit_train=512, only_arms=("finetune", "finetune_half", "scratch"))
    protocol.targets = {"large-different": ("fashion-mnist:classes=5-9", None, 2, 64)}
    verdicts = {
        name: recommendations(measure_runs(source, protocol, ["large-different"]))["large-different"]
        for name, source in (("good", good), ("random", bad))
    }
    assert verdicts["good"]["verdict"] == "supported", verdicts["good"]
    assert verdicts["random"]["verdict"] != "supported", verdicts["random"]


def test_the_outcome_is_computed_from_the_runs(monkeypatch, tmp_path, source_run):
    """The experiment's verdicts, goals, README and figure from given accuracies (no training here)."""
    import trainlab.experiments.transfer as experiment
    from trainlab.experiments import run_experiment

    def fake_runs(source, protocol, targets, log):
        base = {
            "head": 0.80,
            "finetune": 0.70,
            "scratch": 0.75,
            "discriminative": 0.72,
            "finetune_half": 0.76,
        }
        base |= {"keep1": 0.5, "keep2": 0.85, "keep3": 0.6}
        noise = [0.0, 0.01, -0.01, 0.005, -0.005]
        return {
            t: {a: runs(*(base[a] + n for n in noise)) for a in experiment.arms_of(t, protocol)}
            for t in targets
        }

    monkeypatch.setattr(experiment, "measure_runs", fake_runs)
    monkeypatch.setattr(experiment, "default_source", lambda *args: source_run)
    result = run_experiment("transfer", out=tmp_path, progress=False)
    measured = json.loads((tmp_path / "results.json").read_text())["measured"]
    verdicts = {name: v["verdict"] for name, v in measured["verdicts"].items()}
    # head > finetune; keep2 > head; finetune < head; finetune_half > scratch but finetune < scratch
    assert verdicts == {
        "small-similar": "supported",
        "small-different": "supported",
        "large-similar": "not supported",
        "large-different": "mixed",
    }
    assert measured["accuracy"]["small-similar"]["head"]["mean"] == pytest.approx(0.80)
    assert result["verdict"] == "mixed"
    readme = (tmp_path / "README.md").read_text()
    assert "**Protocol.**" in readme and "| **large-different** | | | **mixed** |" in readme
    assert (tmp_path / "transfer.png").read_bytes()[:4] == b"\x89PNG"
