"""Ensembles: "train several independent models; at test time combine their results; accuracy usually
rises by about 2%; instead of training independent models, use several snapshots of one model" (DNN &
CNN deck). Measured through the Trainer (trainlab.run.train) with the cpu-fast recipe's SpeedNet.

Arms (B = one member's epochs: 3 on full Fashion-MNIST, the recipe's; 15 on the 5k subset, where 3
epochs leave a single model far from converged):
- single: one model, B epochs (1x budget);
- ensemble-M: M independent members (seeds s .. s+M-1), B epochs each: Mx budget;
- single-xM: one model, M x B epochs: the same budget as ensemble-M ("equal budget");
- snapshot-5: one run of B epochs, cyclic cosine over 5 cycles, the 5 snapshots averaged (Huang et al.
  2017), 1x budget;
- swa: SWA of the last epochs (train.swa_start = B - 1), 1x budget; ema: train.ema = 0.99, 1x budget.

Each comparison is a paired difference over seeds (arm minus its baseline, the same seed: the same
split), with a 95% t interval. The claim "about +2%" is taken to hold for a comparison when the interval
lies at or above +1 point (half of it): `supported` then, `not supported` when the interval lies below
+1, `inconclusive` when it straddles +1; `mixed` when comparisons of one question disagree. The
deep-ensemble equivalent (Ashukha et al. 2020) of each arm reads its test NLL against the curve of the
ensemble-5 arm's NLL by number of members (mean over seeds), both plain and calibrated (each NLL after
the temperature fitted on the validation split, which Ashukha et al. use).

The single model and the ensembles of 2 and 3 are read off the first 1, 2 and 3 members of each seed's
ensemble-5 (nested_arms): members are independent, so these are exactly the runs they stand for.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from trainlab.config import load_config
from trainlab.ensemble.build import build_ensemble
from trainlab.ensemble.combine import deep_ensemble_equivalent
from trainlab.ensemble.evaluate import evaluate_ensemble
from trainlab.experiments.common import Context, Outcome, check, register_experiment
from trainlab.experiments.stats import combine_verdicts, interval, threshold_verdict
from trainlab.io import atomic_write_json, read_json
from trainlab.run import train

RECIPE = "cpu-fast"
THRESHOLD = 0.01  # +1 point: half of the claimed +2%
FULL_ARMS = ("single", "ensemble-2", "ensemble-3", "ensemble-5", "single-x2", "snapshot-5", "swa", "ema")
SUBSET_ARMS = ("single", "ensemble-2", "ensemble-3", "ensemble-5", "single-x2", "single-x3", "single-x5",
               "snapshot-5", "swa", "ema")  # fmt: skip


@dataclass
class Protocol:
    """The scale: seeds, and per target (limit_train or None for all, arms, epochs B of one member)."""

    seeds: int = 3
    val_size: int = 5000
    targets: dict[str, tuple[int | None, tuple[str, ...], int]] = field(
        default_factory=lambda: {"5k": (5000, SUBSET_ARMS, 15), "full": (None, FULL_ARMS, 3)}
    )
    dataset: str | None = None  # None: the recipe's (fashion-mnist)
    batch_size: int | None = None  # None: the recipe's (256)
    lr: float | None = None  # None: the recipe's (0.2 per batch of 256)
    identical_members: bool = False  # tests: every ensemble is M copies of the single model (gain 0)


def members_of(arm: str) -> int:
    return int(arm.rsplit("-", 1)[1].lstrip("x")) if "-" in arm else 1


def arm_overrides(arm: str, limit: int | None, epochs: int, protocol: Protocol) -> dict[str, Any]:
    keys = {"data.limit_train": limit, "data.val_size": protocol.val_size, "train.epochs": epochs}
    keys |= {"data.batch_size": protocol.batch_size} if protocol.batch_size else {}
    keys |= {"data.dataset": protocol.dataset} if protocol.dataset else {}
    keys |= {"optim.lr": protocol.lr} if protocol.lr else {}
    if arm.startswith("ensemble-"):
        keys["ensemble.members"] = members_of(arm)
    elif arm.startswith("single-x"):
        keys["train.epochs"] = epochs * members_of(arm)
    elif arm == "snapshot-5":
        keys |= {"schedule.name": "cyclic_cosine", "ensemble.snapshots": 5}
    elif arm == "swa":
        keys["train.swa_start"] = max(epochs - 1, 1)
    elif arm == "ema":
        keys["train.ema"] = 0.99
    return keys


def nested_arms(arms: tuple[str, ...]) -> tuple[str, ...]:
    """The arms read off the largest ensemble's first k members instead of trained on their own: the
    single model (its member 0) and the smaller ensembles. Members are independent (docs/ensembles.md:
    member m is the run of seed s + m), so these are the runs they stand for, without training them."""
    largest = max((members_of(a) for a in arms if a.startswith("ensemble-")), default=0)
    return tuple(a for a in arms if a == "single" or (a.startswith("ensemble-") and members_of(a) < largest))


def of_members(summary: dict[str, Any], k: int) -> dict[str, Any]:
    """{accuracy, nll, nll_ts, curve, curve_ts, seconds} of the first k members of an ensemble's summary."""
    m = len(summary["ensemble_accuracy_by_members"])
    curve, curve_ts = summary["ensemble_nll_by_members"], summary.get("ensemble_nll_ts_by_members")
    return {"accuracy": summary["ensemble_accuracy_by_members"][k - 1], "nll": curve[k - 1],
            "nll_ts": curve_ts[k - 1] if curve_ts else None, "curve": curve[:k],
            "curve_ts": curve_ts[:k] if curve_ts else None,
            "seconds": summary.get("total_seconds", 0.0) * k / m}  # fmt: skip


def of_run(summary: dict[str, Any]) -> dict[str, Any]:
    # a snapshot run's evaluated model is its snapshot ensemble: test_* are the ensemble's
    return {"accuracy": summary["test_accuracy"], "nll": summary["test_nll"],
            "nll_ts": summary.get("test_nll_ts"), "seconds": summary["total_seconds"]}  # fmt: skip


def run_arm(arm: str, limit: int | None, epochs: int, protocol: Protocol, seed: int, scratch: Path) -> dict:
    """The summary of one arm and seed; with `identical_members`, an ensemble is M copies of the
    seed's single model (built by trainlab ensemble and evaluated from its directory)."""
    single = scratch / f"single-{limit}-{seed}"
    if arm.startswith("ensemble-") and protocol.identical_members:
        if not single.is_dir():
            run_arm("single", limit, epochs, protocol, seed, scratch)
        out = scratch / f"{arm}-{limit}-{seed}"
        build_ensemble([single] * members_of(arm), out)
        return evaluate_ensemble(out, "cpu")
    cfg = load_config(RECIPE, {**arm_overrides(arm, limit, epochs, protocol), "train.seed": seed})
    out = single if protocol.identical_members and arm == "single" else None
    return train(cfg, out, progress=False).summary


def seed_results(target: str, protocol: Protocol, seed: int, scratch: Path) -> dict[str, dict]:
    """{arm: result} of one target and seed: every arm trained, the nested ones read off the largest
    ensemble."""
    limit, arms, epochs = protocol.targets[target]
    nested, results = nested_arms(arms), {}
    for arm in arms:
        if arm in nested:
            continue
        summary = run_arm(arm, limit, epochs, protocol, seed, scratch)
        if arm.startswith("ensemble-"):
            results |= {k_arm: of_members(summary, members_of(k_arm)) for k_arm in nested}
            results[arm] = of_members(summary, members_of(arm))
        else:
            results[arm] = of_run(summary)
    return {arm: results[arm] for arm in arms}


def measure(protocol: Protocol, log=lambda m: None, cache: Path | None = None) -> dict[str, dict[str, list]]:
    """{target: {arm: [one result per seed]}}. With `cache`, each (target, seed) is written to
    cache/TARGET-seedS.json when done and read back instead of trained when its settings match: an
    interrupted experiment resumes from its last finished seed, and the targets can run separately."""
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for target, (limit, arms, epochs) in protocol.targets.items():
            runs[target] = {arm: [] for arm in arms}
            for seed in range(protocol.seeds):
                key = {
                    **asdict(protocol),
                    "targets": None,
                    "target": [limit, list(arms), epochs],
                    "seed": seed,
                }
                path = cache / f"{target}-seed{seed}.json" if cache is not None else None
                saved = read_json(path) if path is not None and path.is_file() else {}
                if saved.get("settings") == key:
                    results = saved["results"]
                else:
                    results = seed_results(target, protocol, seed, Path(scratch))
                    if path is not None:
                        atomic_write_json(path, {"settings": key, "results": results})
                for arm in arms:
                    runs[target][arm].append(results[arm])
                log(f"{target} seed {seed}: " + ", ".join(f"{a} {r[-1]['accuracy']:.4f}"
                                                          for a, r in runs[target].items()))  # fmt: skip
    return runs


def claim_verdict(gains: list[float], threshold: float = THRESHOLD) -> dict[str, Any]:
    """The paired gains' interval against the threshold: supported at or above it, not supported
    below it, inconclusive when it straddles it (or with fewer than two seeds)."""
    stats = interval(gains)
    if stats["ci95"] is None:
        return {**stats, "gains": gains, "verdict": "inconclusive"}
    return {**stats, "gains": gains, "verdict": threshold_verdict(*stats["ci95"], threshold)}


def comparisons(arms: dict[str, list[dict]]) -> dict[str, tuple[str, str]]:
    """{name: (arm, baseline)} of the arms present."""
    pairs = {}
    for arm in arms:
        m = members_of(arm)
        if arm.startswith("ensemble-"):
            pairs[f"{arm} vs single ({m}x budget)"] = (arm, "single")
            if f"single-x{m}" in arms:
                pairs[f"{arm} vs single-x{m} (equal budget)"] = (arm, f"single-x{m}")
        elif arm in ("snapshot-5", "swa", "ema"):
            pairs[f"{arm} vs single (equal budget)"] = (arm, "single")
    return pairs


def mean_curve(curves: list[list[float] | None]) -> list[float]:
    """The mean over seeds of the reference NLL-by-members curve ([] when a seed lacks it)."""
    return np.mean(curves, axis=0).tolist() if curves and all(curves) else []


def equivalent(nlls: list[float | None], curve: list[float]) -> float | None:
    """The deep-ensemble equivalent of an arm's mean NLL over seeds, read off the reference curve."""
    if not curve or None in nlls:
        return None
    return deep_ensemble_equivalent(float(np.mean(nlls)), curve)


def analyse(runs: dict[str, dict[str, list[dict]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, arms in runs.items():
        accuracy = {a: interval([r["accuracy"] for r in rs]) for a, rs in arms.items()}
        verdicts = {}
        for name, (arm, base) in comparisons(arms).items():
            gains = [x["accuracy"] - y["accuracy"] for x, y in zip(arms[arm], arms[base])]
            verdicts[name] = claim_verdict(gains)
        largest = max(arms, key=lambda a: members_of(a) if a.startswith("ensemble-") else 0)
        curve, curve_ts = (mean_curve([r.get(key) for r in arms[largest]]) for key in ("curve", "curve_ts"))
        dee = {a: equivalent([r["nll"] for r in rs], curve) for a, rs in arms.items()}
        dee_ts = {a: equivalent([r["nll_ts"] for r in rs], curve_ts) for a, rs in arms.items()}
        independent = [
            v["verdict"] for k, v in verdicts.items() if k.startswith("ensemble-") and "x budget" in k
        ]
        out[target] = {"accuracy": accuracy, "comparisons": verdicts, "nll_by_members": curve,
                       "nll_ts_by_members": curve_ts, "deep_ensemble_equivalent": dee,
                       "deep_ensemble_equivalent_ts": dee_ts,
                       "claim": combine_verdicts(independent) if independent else "inconclusive"}  # fmt: skip
    return out


@register_experiment(
    "ensembles",
    claim="Combining several independently trained models raises test accuracy by about 2% (more on "
    "small data); snapshots of one run are a cheaper ensemble.",
    lecture="DNN & CNN: ensembles",
)
def ensembles_experiment(ctx: Context) -> Outcome:
    protocol = Protocol(seeds=max(ctx.seeds, 2 if ctx.quick else 3))
    if ctx.quick:  # 2 x 31 steps of 64: enough steps for batch norm's running statistics to settle
        protocol.val_size, protocol.batch_size, protocol.lr = 500, 64, 0.05
        protocol.targets = {"2k": (2000, ("single", "ensemble-2", "single-x2"), 2)}
    ctx.seeds = protocol.seeds
    runs = measure(protocol, ctx.log, None if ctx.quick else ctx.out / "runs")
    analysis = analyse(runs)
    checks = [
        check(f"{target}: {name}", v["mean"], "paired 95% CI >= +1 pt", v["verdict"] == "supported")
        for target, a in analysis.items()
        for name, v in a["comparisons"].items()
    ]
    claim = combine_verdicts([a["claim"] for a in analysis.values()])
    draw(ctx, analysis)
    measured = {"claim_verdict": claim, "targets": analysis}
    return Outcome(measured, checks, {"protocol": asdict(protocol), "recipe": RECIPE}, notes(analysis, claim))


def pct(stats: dict[str, Any], sign: bool = False) -> str:
    ci = stats.get("ci95")
    form = "+.2f" if sign else ".2f"
    text = f"{100 * stats['mean']:{form}}"
    return text + (f" [{100 * ci[0]:{form}}, {100 * ci[1]:{form}}]" if ci else "")


PROTOCOL = """Protocol: the cpu-fast recipe (SpeedNet 32-64-128, patch-whitening stem, one-cycle Nesterov SGD,
label smoothing 0.1, hflip, flip TTA), each arm trained through `trainlab.run.train`, 3 seeds (seed s: the
split, the single model, member 0 of each ensemble), 5,000 training images held out for validation (the
temperature of the calibrated NLL is fitted there). The single model and the ensembles of 2 and 3 are
the first 1, 2 and 3 members of each seed's 5-member ensemble (members are independent runs). **Full
Fashion-MNIST** (55,000 training images), B = 3 epochs (the recipe's): single, ensembles of 2, 3 and 5 (Mx
budget), single-x2 (6 epochs: ensemble-2's budget), snapshot-5, SWA, EMA. **5k subset** (the first 5,000
training images after the split), B = 15 epochs (the last run, at 3 epochs, left the single
model at 78%, far from converged): every arm, with single models at 2x, 3x and 5x the epochs for equal
budget. Test accuracy on the 10,000 test images. A comparison is the paired gain over seeds with a 95% t
interval; the claim "about +2%" is taken to hold where that interval lies at or above +1 point
(supported), not where it lies below (not supported), and is inconclusive where it straddles +1 point.
`--quick`: 2,000 images, 2 epochs at batch 64, 2 seeds, single, ensemble-2 and single-x2 only."""


def notes(analysis: dict[str, Any], claim: str) -> str:
    lines = [f'**The claim "about +2%" (independent ensembles at Mx budget): {claim}.**', "", PROTOCOL, ""]
    for target, a in analysis.items():
        lines += [f"### {target}", "", "| arm | test accuracy % [95% CI] | deep-ensemble equivalent, "
                  "calibrated NLL | plain NLL |", "|---|---|---|---|"]  # fmt: skip
        for arm, stats in a["accuracy"].items():
            dee = [a[key].get(arm) for key in ("deep_ensemble_equivalent_ts", "deep_ensemble_equivalent")]
            cells = " | ".join("" if d is None else f"{d:.2f}" for d in dee)
            lines.append(f"| {arm} | {pct(stats)} | {cells} |")
        lines += ["", "| comparison | gain, points [95% CI] | verdict (threshold +1 pt) |", "|---|---|---|"]
        lines += [f"| {name} | {pct(v, True)} | {v['verdict']} |" for name, v in a["comparisons"].items()]
        lines += ["", f"Verdict on the claim for {target}: **{a['claim']}**.", ""]
    return "\n".join(lines)


def draw(ctx: Context, analysis: dict[str, Any]) -> None:
    fig, axes = plt.subplots(1, len(analysis), figsize=(6.5 * len(analysis), 4.2), squeeze=False)
    for ax, (target, a) in zip(axes[0], analysis.items()):
        arms = list(a["accuracy"])
        means = [100 * a["accuracy"][arm]["mean"] for arm in arms]
        errors = [100 * (s["ci95"][1] - s["mean"]) if s["ci95"] else 0 for s in a["accuracy"].values()]
        colors = [plt.cm.tab10(0 if arm.startswith("ensemble") else 1 if arm.startswith("single") else 2)
                  for arm in arms]  # fmt: skip
        ax.bar(range(len(arms)), means, yerr=errors, capsize=3, color=colors)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
        low = min(means) - 2
        ax.set_ylim(max(low, 0), max(means) + 1)
        ax.set(ylabel="test accuracy (%)", title=f"{target}: mean and 95% CI over seeds")
    fig.tight_layout()
    ctx.figure("ensembles.png", fig, "Test accuracy per arm (blue: ensembles, orange: single models, "
               "green: snapshot, SWA, EMA)")  # fmt: skip
