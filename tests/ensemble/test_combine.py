"""The combination rules, member disagreement, the deep-ensemble equivalent and the manifest, on
constructed outputs whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from trainlab.ensemble.combine import combine, deep_ensemble_equivalent, member_disagreement, nll_by_size
from trainlab.ensemble.manifest import read_manifest, write_manifest
from trainlab.errors import ConfigError, TrainlabError


def logits_of(probs: list[list[list[float]]]) -> torch.Tensor:
    return torch.tensor(probs).log()  # (B, M, K) whose softmax is `probs`


def test_mean_prob_is_the_mean_of_the_members_probabilities():
    z = logits_of([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]])
    assert torch.allclose(combine(z, "mean_prob").softmax(1), torch.tensor([[0.4, 0.4, 0.2]]), atol=1e-6)


def test_mean_logit_is_the_mean_of_the_logits():
    z = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])
    assert torch.equal(combine(z, "mean_logit"), torch.tensor([[1.0, 2.0]]))


def test_weighted_weights_each_members_probabilities():
    z = logits_of([[[0.9, 0.1], [0.1, 0.9]]])
    got = combine(z, "weighted", torch.tensor([3.0, 1.0])).softmax(1)
    assert torch.allclose(got, torch.tensor([[0.7, 0.3]]), atol=1e-6)  # (3 * 0.9 + 0.1) / 4
    with pytest.raises(ConfigError, match="weighted"):
        combine(z, "weighted", None)


def test_vote_counts_votes_and_breaks_ties_towards_the_lowest_class_index():
    # three members: votes for class 2, 1, 2 -> class 2 with probability 2/3
    z = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [1.0, 0.0, 2.0]]])
    assert torch.allclose(combine(z, "vote").softmax(1), torch.tensor([[0.0, 1 / 3, 2 / 3]]), atol=1e-6)
    # a tie between classes 3 and 1 (one vote each): class 1, the lower index, whatever the order
    for order in ([0, 1], [1, 0]):
        tie = torch.tensor([[[0.0, 0.0, 0.0, 9.0], [0.0, 9.0, 0.0, 0.0]]])[:, order]
        assert combine(tie, "vote").argmax(1).item() == 1
    assert math.isfinite(float(torch.nn.functional.cross_entropy(combine(z, "vote"), torch.tensor([0]))))


@pytest.mark.parametrize("rule", ["mean_prob", "mean_logit", "vote", "weighted"])
def test_an_ensemble_of_identical_members_is_the_member(rule):
    torch.manual_seed(0)
    member = torch.randn(64, 1, 10) * 3
    z = member.expand(64, 4, 10)
    got = combine(z, rule, torch.tensor([0.9, 0.8, 0.7, 0.95])).softmax(1)
    if rule == "vote":  # each sample: all four vote for the member's class
        assert torch.equal(got.argmax(1), member[:, 0].argmax(1))
    else:
        assert (got - member[:, 0].softmax(1)).abs().max() <= 1e-6


def test_disagreement_is_the_mean_pairwise_fraction_of_differing_predictions():
    # 2 samples, 3 members predicting (0, 0, 1) and (2, 2, 2): pairs differing 2 of 3, then 0 of 3
    z = torch.zeros(2, 3, 3)
    for b, preds in enumerate([(0, 0, 1), (2, 2, 2)]):
        for m, c in enumerate(preds):
            z[b, m, c] = 1.0
    assert member_disagreement(z) == pytest.approx((2 / 3 + 0) / 2)
    assert member_disagreement(z[:, :1].expand(2, 3, 3)) == 0.0


def test_deep_ensemble_equivalent_interpolates_the_reference_curve():
    curve = [0.40, 0.30, 0.26, 0.24]  # the NLL of 1, 2, 3, 4 independent members
    assert deep_ensemble_equivalent(0.30, curve) == pytest.approx(2.0)
    assert deep_ensemble_equivalent(0.28, curve) == pytest.approx(2.5)
    assert deep_ensemble_equivalent(0.45, curve) == 1.0
    assert deep_ensemble_equivalent(0.10, curve) == 4.0


def test_nll_by_size_of_identical_members_is_flat():
    z = torch.randn(32, 1, 5).expand(32, 3, 5)
    labels = torch.randint(0, 5, (32,))
    curve = nll_by_size(z, labels)
    assert max(curve) - min(curve) <= 1e-5


def test_calibrated_curve_fits_each_sizes_temperature_on_the_validation_outputs():
    """Ashukha et al. (2020) read the deep-ensemble equivalent off the calibrated NLL. With the test split
    as its own validation split, the fitted temperature minimises each size's NLL, so the calibrated
    curve lies at or below the plain one; for overconfident members (logits x 6) well below it."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (400,), generator=g)
    z = torch.randn(400, 3, 5, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, 5)[:, None]
    z = 6 * z  # overconfident: the plain NLL is dominated by confident mistakes
    plain, calibrated = nll_by_size(z, labels), nll_by_size(z, labels, (z, labels))
    for p, c in zip(plain, calibrated):
        assert c <= p + 1e-6 * p
    assert calibrated[0] < 0.5 * plain[0]  # this seed: 0.97 against 2.11
    flat = nll_by_size(z[:, :1].expand(400, 3, 5), labels, (z[:, :1].expand(400, 3, 5), labels))
    assert max(flat) - min(flat) <= 1e-5 * flat[0]


def test_manifest_round_trips_and_refuses_bad_fields_in_one_line(tmp_path):
    members = [{"path": "members/a.safetensors", "seed": 3, "val_accuracy": 0.9}]
    write_manifest(tmp_path, members, "mean_prob", ["a", "b"], "mnist", (1, 28, 28))
    manifest = read_manifest(tmp_path)
    assert manifest["members"][0]["path"] == (tmp_path / "members/a.safetensors").resolve()
    assert manifest["members"][0]["weight"] is None and manifest["image_shape"] == [1, 28, 28]
    with pytest.raises(TrainlabError, match="combine"):
        write_manifest(tmp_path, members, "median", ["a", "b"], "mnist", (1, 28, 28))
    with pytest.raises(TrainlabError, match="leaves the directory"):
        write_manifest(tmp_path, [{"path": "../x.safetensors"}], "vote", ["a"], "mnist", (1, 28, 28))
        read_manifest(tmp_path)
    with pytest.raises(TrainlabError, match="weighted"):
        write_manifest(tmp_path, [{"path": "a"}], "weighted", ["a"], "mnist", (1, 28, 28))
    (tmp_path / "ensemble.json").write_text('{"format": "trainlab-ensemble", "version": 2}')
    with pytest.raises(TrainlabError, match="version") as error:
        read_manifest(tmp_path)
    assert "\n" not in str(error.value)
