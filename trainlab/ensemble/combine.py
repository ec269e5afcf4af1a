"""How an ensemble's members become one prediction. Each rule turns the members' logits z_m (B, M, K)
into one (B, K) tensor of logits, so that everything downstream (loss, accuracy, softmax, top-k, the
confusion matrix) treats an ensemble like one model:

    mean_prob   log( 1/M sum_m softmax(z_m) )         the deep-ensemble rule (Lakshminarayanan et al. 2017)
    mean_logit  1/M sum_m z_m                         the geometric mean of the members' probabilities
    vote        log( votes_c / M )                    majority vote (hard voting)
    weighted    log( sum_m w_m softmax(z_m) / sum_m w_m ),  w_m = the member's validation accuracy

The log of a probability vector is a valid logit vector: softmax(log p) = p. A vote's probabilities are
the vote fractions (a class without votes gets 1e-12, not 0, so the loss stays finite); a tie between
classes with the same number of votes goes to the lowest class index among them (torch.argmax returns
the first maximum), the same on every device and in every run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.tasks.calibration import fit_temperature

COMBINE_RULES = ("mean_prob", "mean_logit", "vote", "weighted")
NO_VOTE = 1e-12  # the probability of a class that no member voted for


def combine(member_logits: torch.Tensor, rule: str = "mean_prob", weights: torch.Tensor | None = None):
    """(B, M, K) member logits -> (B, K) ensemble logits by `rule`; `weights` (M,) for "weighted"."""
    if member_logits.ndim != 3:
        raise ConfigError(f"ensemble: expected member outputs (B, M, K), got {tuple(member_logits.shape)}")
    z = member_logits.float()
    if rule == "mean_prob":
        return mean_probability(z, torch.ones(z.shape[1], device=z.device)).log()
    if rule == "mean_logit":
        return z.mean(1)
    if rule == "vote":
        votes = F.one_hot(z.argmax(2), z.shape[2]).sum(1)  # (B, K) member votes per class
        return (votes.float() / z.shape[1]).clamp_min(NO_VOTE).log()
    if rule == "weighted":
        if (
            weights is None
            or weights.shape != (z.shape[1],)
            or not (weights >= 0).all()
            or weights.sum() <= 0
        ):
            raise ConfigError(
                f"ensemble combine 'weighted': expected {z.shape[1]} non-negative member weights, not all 0"
            )
        return mean_probability(z, weights.to(z.device, torch.float32)).log()
    raise ConfigError(f"ensemble combine {rule!r}: expected one of {', '.join(COMBINE_RULES)}")


def mean_probability(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_m w_m softmax(z_m) / sum_m w_m, (B, K); clamped away from 0 so that its log is finite."""
    probs = torch.einsum("bmk,m->bk", z.softmax(2), weights / weights.sum())
    return probs.clamp_min(torch.finfo(torch.float32).tiny)


def member_disagreement(member_logits: torch.Tensor) -> float:
    """The mean over member pairs of the fraction of samples on which the two predict different classes
    (Fort et al. 2019, "Deep Ensembles: A Loss Landscape Perspective"); 0 for identical members."""
    predictions = member_logits.argmax(2)  # (B, M)
    m = predictions.shape[1]
    if m < 2 or not len(predictions):
        return 0.0
    differ = predictions.unsqueeze(2) != predictions.unsqueeze(1)  # (B, M, M)
    return float(differ.float().sum((1, 2)).mean() / (m * (m - 1)))


def nll_by_size(
    member_logits: torch.Tensor, labels: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor] | None = None
) -> list[float]:
    """The test NLL of the mean-probability ensemble of the first k members, for k = 1..M: the curve that
    the deep-ensemble equivalent reads (Ashukha et al. 2020). With `val` = (member logits (N', M, K),
    labels) of a validation split, the calibrated curve that Ashukha et al. use: each k-member ensemble's
    log-probabilities are divided by the temperature fitted on its own validation outputs first."""
    curve = []
    for k in range(1, member_logits.shape[1] + 1):
        logp = combine(member_logits[:, :k], "mean_prob")
        if val is not None:
            logp = logp / fit_temperature(combine(val[0][:, :k], "mean_prob"), val[1])
        curve.append(float(F.cross_entropy(logp, labels)))
    return curve


def accuracy_by_size(member_logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The accuracy of the mean-probability ensemble of the first k members, for k = 1..M. Members are
    independent, so the first k members of an M-member run are the members of a k-member run."""
    return [
        float((combine(member_logits[:, :k], "mean_prob").argmax(1) == labels).double().mean())
        for k in range(1, member_logits.shape[1] + 1)
    ]


def calibrated_nll(
    logits: torch.Tensor, labels: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """The test NLL of `logits` after the temperature fitted on `val` = (logits, labels) (Guo et al. 2017)."""
    return float(F.cross_entropy(logits / fit_temperature(*val), labels))


NLL_ROUNDING = 32 * 2.0**-23  # float32 rounding of a mean over ~1e4 terms (pairwise summation: ~log2 N eps)


def deep_ensemble_equivalent(nll: float, curve: list[float]) -> float:
    """Ashukha et al. 2020 ("Pitfalls of In-Domain Uncertainty Estimation and Ensembling in Deep
    Learning"): the number of independent members a method is worth, the k at which the deep-ensemble
    curve curve[k-1] (the NLL of k members; decreasing) reaches the method's `nll`, linearly
    interpolated between sizes: 1 when the method is no better than one member, and the curve's largest
    size when it is at least as good as the whole ensemble (the curve says nothing beyond it)."""
    if not curve:
        raise ConfigError("deep-ensemble equivalent: the reference curve is empty")
    # NLLs are float32 means: two that differ by less than their rounding are the same NLL (a flat
    # curve of identical members is worth 1, whichever way the rounding fell)
    tol = NLL_ROUNDING * max(abs(nll), *map(abs, curve))
    if nll >= curve[0] - tol:
        return 1.0
    for k in range(1, len(curve)):
        high, low = curve[k - 1], curve[k]
        if nll >= low - tol:
            return k + (high - nll) / (high - low) if high > low else float(k + 1)
    return float(len(curve))
