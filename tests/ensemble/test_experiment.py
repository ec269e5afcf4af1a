"""`trainlab experiment ensembles`: its verdict follows the measured gains (and flips with them), and an
ensemble of identical members gains nothing, through the real pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.experiments import run_experiment
from trainlab.experiments.ensembles import Protocol, analyse, claim_verdict, measure
from trainlab.experiments.stats import combine_verdicts


def test_the_verdict_follows_the_interval_of_the_gains():
    assert claim_verdict([0.021, 0.019, 0.020])["verdict"] == "supported"
    assert claim_verdict([0.0, 0.0, 0.0])["verdict"] == "not supported"  # identical members
    assert claim_verdict([0.004, 0.003, 0.005])["verdict"] == "not supported"
    assert claim_verdict([0.03, -0.01, 0.02])["verdict"] == "inconclusive"  # straddles +1 pt
    assert claim_verdict([0.02])["verdict"] == "inconclusive"  # one seed: no interval
    assert combine_verdicts(["supported", "not supported"]) == "mixed"
    assert combine_verdicts(["supported", "inconclusive"]) == "inconclusive"


def test_an_ensemble_of_identical_members_gains_nothing_and_the_claim_is_not_supported(tiny_mnist):
    protocol = Protocol(
        seeds=2, epochs=1, val_size=44, batch_size=64, dataset="mnist", identical_members=True
    )
    protocol.targets = {"tiny": (256, ("single", "ensemble-3"))}
    runs = measure(protocol)
    result = analyse({"tiny": runs["tiny"]})["tiny"]
    comparison = result["comparisons"]["ensemble-3 vs single (3x budget)"]
    assert comparison["gains"] == [0.0, 0.0]
    assert comparison["verdict"] == "not supported" and result["claim"] == "not supported"


@pytest.mark.slow
def test_quick_run_writes_its_verdict_and_ensembles_beat_their_member(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_experiment("ensembles", quick=True, out=tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "results.json").read_text())
    accuracy = saved["measured"]["targets"]["2k"]["accuracy"]
    assert accuracy["ensemble-2"]["mean"] > accuracy["single"]["mean"]
    assert result["verdict"] in ("supported", "not supported", "mixed")
    assert "**The claim" in (tmp_path / "README.md").read_text()
