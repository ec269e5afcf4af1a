"""Calibration: does a classifier's confidence match how often it is right?

For N samples with predicted probabilities p (N, C) and labels y:

    NLL   = -1/N sum_i log p_i[y_i]
    Brier = 1/N sum_i sum_c (p_ic - [c == y_i])^2                      (Brier 1950)
    ECE   = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|                    (Naeini et al. 2015)

where B_b holds the samples whose confidence max_c p_ic falls in the b-th of `bins` equal-width bins
(b/bins, (b+1)/bins] (15 bins, as in Guo et al. 2017), acc is the fraction of them classified right
and conf their mean confidence. Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks") divides the logits by one scalar T > 0 fitted on validation data to minimise the NLL; it
changes no prediction (argmax is invariant), only the confidence.

    metrics = calibration_metrics(logits.softmax(1), labels)      # {"nll", "brier", "ece"}
    t = fit_temperature(val_logits, val_labels)
    scaled = calibration_metrics((logits / t).softmax(1), labels)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError

ECE_BINS = 15
# The range searched for 1/T: a temperature from 1e-3 (sharpen a thousandfold) to 1e3 (flatten it).
INVERSE_TEMPERATURE_RANGE = (1e-3, 1e3)


def check_predictions(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> None:
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise ConfigError(
            f"calibration: expected probabilities (N, C) and labels (N,), got {tuple(probs.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if bins < 1:
        raise ConfigError(f"calibration: bins={bins}: expected 1 or more")


def bin_index(confidence: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin of each confidence among (b/bins, (b+1)/bins]: ceil(conf * bins) - 1, so that a
    confidence of exactly 1 is in the last bin and one on an inner edge in the bin below it."""
    return (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)


def bin_sums(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> tuple[torch.Tensor, ...]:
    """(count, number right, sum of confidences) per bin, float64 tensors (bins,)."""
    confidence, predicted = probs.max(1)
    index = bin_index(confidence, bins)
    counts = torch.bincount(index, minlength=bins).double()
    correct = torch.bincount(index, weights=(predicted == labels).double(), minlength=bins)
    return counts, correct, torch.bincount(index, weights=confidence, minlength=bins)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, list]:
    """Per confidence bin: "counts", "accuracy" and mean "confidence" (0 for an empty bin), and the
    bins' "edges" (bins + 1 of them): what a reliability diagram draws."""
    check_predictions(probs, labels, bins)
    counts, correct, confident = bin_sums(probs.detach().double().cpu(), labels.detach().long().cpu(), bins)
    safe = counts.clamp_min(1)
    return {
        "counts": counts.long().tolist(),
        "accuracy": (correct / safe).tolist(),
        "confidence": (confident / safe).tolist(),
        "edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64).tolist(),
    }


def calibration_metrics(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, float]:
    """{"nll", "brier", "ece"} of probabilities (N, C) against labels (N,), computed in float64. A
    probability of 0 on the true class gives an NLL of -log(smallest positive double), not inf."""
    check_predictions(probs, labels, bins)
    if not len(labels):
        return {"nll": math.nan, "brier": math.nan, "ece": math.nan}
    p, y = probs.detach().double().cpu(), labels.detach().long().cpu()
    true_p = p.gather(1, y[:, None]).squeeze(1)
    nll = -true_p.clamp_min(torch.finfo(torch.float64).tiny).log().mean()
    brier = ((p - F.one_hot(y, p.shape[1]).double()) ** 2).sum(1).mean()
    _, correct, confident = bin_sums(p, y, bins)
    ece = (correct - confident).abs().sum() / len(y)  # sum_b |B_b|/N |acc_b - conf_b|
    return {"nll": float(nll), "brier": float(brier), "ece": float(ece)}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises NLL(softmax(logits / T)) on (logits, labels), usually a validation split.

    With beta = 1/T the NLL is convex (log-sum-exp of a linear function of beta, minus a linear term),
    and its derivative, mean_i(E_softmax(beta z_i)[z] - z_i[y_i]), rises with beta: so bisection on the
    sign of the derivative (in log beta, float64) finds the minimum to machine precision in 100 steps,
    with no learning rate to tune. When the minimum lies outside INVERSE_TEMPERATURE_RANGE (for example
    perfectly separated logits, whose NLL falls all the way to T = 0), the nearest end is returned."""
    check_predictions(logits, labels, 1)
    if not len(labels):
        return 1.0
    z, y = logits.detach().double().cpu(), labels.detach().long().cpu()
    true_z = z.gather(1, y[:, None]).squeeze(1)

    def slope(beta: float) -> float:
        return float(((beta * z).softmax(1) * z).sum(1).sub(true_z).mean())

    low, high = (math.log(b) for b in INVERSE_TEMPERATURE_RANGE)
    if slope(math.exp(high)) <= 0:  # still falling at the sharpest end
        return 1.0 / math.exp(high)
    if slope(math.exp(low)) >= 0:  # already rising at the flattest end
        return 1.0 / math.exp(low)
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if slope(math.exp(mid)) < 0 else (low, mid)
    return 1.0 / math.exp(0.5 * (low + high))


def calibration_summary(
    logits: torch.Tensor,
    labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    prefix: str = "test_",
) -> dict[str, float]:
    """What a final evaluation reports: {prefix}nll, brier, ece of softmax(logits); with a validation
    split, also the fitted "temperature" and {prefix}nll_ts, ece_ts, brier_ts after scaling by it."""
    summary = {f"{prefix}{k}": v for k, v in calibration_metrics(logits.float().softmax(1), labels).items()}
    if val_logits is not None and val_labels is not None and len(val_labels):
        t = fit_temperature(val_logits, val_labels)
        scaled = calibration_metrics((logits.double() / t).softmax(1), labels)
        summary["temperature"] = t
        summary.update({f"{prefix}{k}_ts": v for k, v in scaled.items()})
    return summary
