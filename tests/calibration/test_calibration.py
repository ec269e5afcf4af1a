"""NLL, Brier score, ECE and temperature scaling against answers known by construction."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainlab.errors import ConfigError
from trainlab.tasks.calibration import (
    INVERSE_TEMPERATURE_RANGE,
    calibration_metrics,
    calibration_summary,
    fit_temperature,
    reliability_bins,
)

# Four predictions worked by hand. Confidences 0.9, 0.9, 0.62, 0.42 fall in the bins (13/15, 14/15],
# (13/15, 14/15], (9/15, 10/15] and (6/15, 7/15]; the first bin holds one right and one wrong answer.
PROBS = torch.tensor(
    [
        [0.90, 0.05, 0.03, 0.02],  # label 0: right
        [0.90, 0.05, 0.03, 0.02],  # label 1: wrong
        [0.10, 0.62, 0.18, 0.10],  # label 1: right
        [0.42, 0.28, 0.20, 0.10],  # label 2: wrong
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 1, 1, 2])


def test_metrics_of_constructed_predictions_match_the_hand_computed_answers():
    metrics = calibration_metrics(PROBS, LABELS)
    # ECE = 2/4 |0.5 - 0.9| + 1/4 |1 - 0.62| + 1/4 |0 - 0.42|
    assert metrics["ece"] == pytest.approx(0.2 + 0.095 + 0.105, abs=1e-12)
    assert metrics["nll"] == pytest.approx(
        -(math.log(0.9) + math.log(0.05) + math.log(0.62) + math.log(0.2)) / 4
    )
    # Brier, row by row: sum_c (p_c - onehot_c)^2
    rows = [0.01 + 0.0025 + 0.0009 + 0.0004, 0.81 + 0.9025 + 0.0009 + 0.0004,
            0.01 + 0.1444 + 0.0324 + 0.01, 0.1764 + 0.0784 + 0.64 + 0.01]  # fmt: skip
    assert metrics["brier"] == pytest.approx(sum(rows) / 4, abs=1e-12)
    table = reliability_bins(PROBS, LABELS)
    assert [i for i, n in enumerate(table["counts"]) if n] == [6, 9, 13]
    assert [table["counts"][i] for i in (6, 9, 13)] == [1, 1, 2]
    assert table["accuracy"][13] == 0.5 and table["confidence"][13] == pytest.approx(0.9)
    assert len(table["edges"]) == 16 and table["edges"][-1] == 1.0


def test_uniform_predictions_on_balanced_labels_are_perfectly_calibrated():
    probs = torch.full((40, 4), 0.25, dtype=torch.float64)
    labels = torch.arange(40) % 4  # argmax of a tie is class 0, right a quarter of the time
    metrics = calibration_metrics(probs, labels)
    assert metrics["ece"] == pytest.approx(0.0, abs=1e-15)
    assert metrics["nll"] == pytest.approx(math.log(4)) and metrics["brier"] == pytest.approx(0.75)


def test_ece_equals_a_direct_loop_over_bins_on_random_predictions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=g, dtype=torch.float64), 1)
    labels = torch.randint(0, 10, (500,), generator=g)
    confidence, predicted = probs.max(1)
    ece = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = (predicted[inside] == labels[inside]).double().mean() - confidence[inside].mean()
            ece += inside.sum().item() / 500 * abs(gap.item())
    assert calibration_metrics(probs, labels)["ece"] == pytest.approx(ece, abs=1e-12)
    assert calibration_metrics(probs, labels, bins=1)["ece"] == pytest.approx(
        abs((predicted == labels).double().mean().item() - confidence.mean().item()), abs=1e-12
    )


def test_temperature_scaling_recovers_a_known_temperature():
    """Labels drawn from softmax(z / 2): the fitted T is 2 within 4 standard errors of the maximum
    likelihood estimate of beta = 1/T, sqrt(1 / (N I)), with I = mean Var_softmax(z/2)[z], the Fisher
    information per sample (computed here, not assumed)."""
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 10, generator=g, dtype=torch.float64)
    true_t = 2.0
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=g).squeeze(1)
    p = torch.softmax(logits / true_t, 1)
    information = ((p * logits**2).sum(1) - (p * logits).sum(1) ** 2).mean()
    standard_error = float(1 / (len(labels) * information).sqrt())
    t = fit_temperature(logits.float(), labels)
    assert abs(1 / t - 1 / true_t) < 4 * standard_error, (t, standard_error)

    def nll(temperature: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / temperature, labels))

    assert nll(t) <= min(nll(t * 1.01), nll(t / 1.01))  # a minimum of the NLL
    summary = calibration_summary(logits, labels, logits, labels)  # fitted on the same data: NLL falls
    assert summary["temperature"] == pytest.approx(t, rel=1e-6)
    assert summary["test_nll_ts"] < summary["test_nll"]


def test_separable_logits_give_the_sharpest_temperature_in_range():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # every NLL falls as T -> 0: the bound is returned
    assert fit_temperature(logits, torch.tensor([0, 1])) == pytest.approx(1 / INVERSE_TEMPERATURE_RANGE[1])


def test_mismatched_shapes_are_one_line_errors():
    with pytest.raises(
        ConfigError, match=r"expected probabilities \(N, C\) and labels \(N,\), got \(4, 4\) and \(3,\)"
    ):
        calibration_metrics(PROBS, LABELS[:3])


def test_a_run_reports_calibration_and_eval_reproduces_it(tiny_mnist, tmp_path, capsys):
    """summary.json holds test_nll, test_brier, test_ece, the temperature fitted on the validation split
    and the scaled metrics; `trainlab eval` refits the temperature on the same seeded split and prints
    the same numbers; the run directory has its reliability diagram."""
    import trainlab
    from trainlab.cli import main

    cfg = trainlab.load_config(
        "default",
        {"data.dataset": "mnist", "data.limit_train": 256, "data.val_size": 44, "data.batch_size": 64,
         "model.widths": [8, 8, 16], "train.epochs": 1, "train.device": "cpu"},
    )  # fmt: skip
    trainlab.train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    keys = [
        "test_nll",
        "test_brier",
        "test_ece",
        "temperature",
        "test_nll_ts",
        "test_brier_ts",
        "test_ece_ts",
    ]
    assert all(math.isfinite(summary[k]) for k in keys) and summary["temperature"] > 0
    assert summary["test_nll"] == pytest.approx(summary["test_loss"], rel=1e-6)  # NLL is the test loss
    assert (tmp_path / "run" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<h2>Calibration</h2>" in (tmp_path / "run" / "report.html").read_text()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert {k: evaluated[k] for k in keys} == {k: summary[k] for k in keys}
