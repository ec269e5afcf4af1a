"""`trainlab experiment ensembles`: its verdict follows the measured gains (and flips with them), and an
ensemble of identical members gains nothing, through the real pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.experiments import ensembles, run_experiment
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


def test_an_ensemble_of_identical_members_gains_nothing_and_the_claim_is_not_supported(
    tiny_mnist, tmp_path, monkeypatch
):
    protocol = Protocol(seeds=2, val_size=44, batch_size=64, dataset="mnist", identical_members=True)
    protocol.targets = {"tiny": (256, ("single", "ensemble-2", "ensemble-3"), 1)}
    runs = measure(protocol, cache=tmp_path)
    result = analyse({"tiny": runs["tiny"]})["tiny"]
    comparison = result["comparisons"]["ensemble-3 vs single (3x budget)"]
    assert comparison["gains"] == [0.0, 0.0]
    assert comparison["verdict"] == "not supported" and result["claim"] == "not supported"
    # identical members are worth one member, by the plain and the calibrated NLL alike
    assert result["deep_ensemble_equivalent"]["ensemble-3"] == 1.0
    assert result["deep_ensemble_equivalent_ts"]["ensemble-3"] == 1.0
    for two, three in zip(runs["tiny"]["ensemble-2"], runs["tiny"]["ensemble-3"]):
        # read off ensemble-3's first two members
        assert two["curve"] == three["curve"][:2] and two["nll"] == three["curve"][1]
        assert two["curve_ts"] == three["curve_ts"][:2] and two["nll_ts"] == three["curve_ts"][1]
    # each finished seed is cached: a second measure (an interrupted experiment resumed) trains nothing,
    # and a changed setting trains again
    monkeypatch.setattr(ensembles, "run_arm", lambda *a: pytest.fail("trained a cached seed"))
    assert measure(protocol, cache=tmp_path) == runs
    protocol.val_size = 40
    with pytest.raises(pytest.fail.Exception, match="cached seed"):
        measure(protocol, cache=tmp_path)


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
