"""Transfer learning: the lecture's four scenarios (DNN & CNN deck), measured through the Trainer.

Source: SpeedNet (`cpu-fast`) trained on Fashion-MNIST classes 0-4 (trainlab.transfer_run's default
source). Targets: Fashion-MNIST classes 5-9 (similar: the same kind of image, other classes) and
scikit-learn's digits (different), each at 10 labels per class (small) and in full (large). Arms:

- head: every stage frozen (batch norms on their source statistics), a new head trained;
- keep k: the first k stages frozen, a new head on them, k = 1 .. K-1 (Yosinski et al. 2014's curve;
  k = K is `head`);
- finetune: everything from the source, all trained (also at half the epochs, `finetune_half`);
- discriminative: the same, stage i at lr * lr_mult^((K - i) / K) (fastai's slice);
- scratch: the same network and recipe, from its own initialisation.

Each recommendation is a paired difference over seeds (the arms of one seed share its data subset and
order), with a 95% t interval: `supported` when the interval lies at or above the threshold 0, `not
supported` when it lies below it, `inconclusive` when it straddles it; `mixed` when a recommendation's
sub-checks disagree. A run whose loss becomes non-finite is reported as diverged and left out of its
pairs; with fewer than two pairs left, the verdict is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from trainlab.config import load_config
from trainlab.experiments.common import Context, Outcome, check, register_experiment
from trainlab.experiments.stats import combine_verdicts, threshold_verdict
from trainlab.report.compare import t_interval
from trainlab.run import train
from trainlab.training.trainer import TrainingDiverged
from trainlab.transfer_run import COMMON, HEAD_LR, SOURCE_RECIPE, default_source, source_config

SIMILAR, DIFFERENT = "fashion-mnist:classes=5-9", "digits"
QUICK_SOURCE = {"train.epochs": 1, "data.limit_train": 4096, "data.val_size": 500, "train.threads": 1}


@dataclass
class Protocol:
    """The experiment's scale. Each target: (dataset, per_class or None for all, epochs, batch size)."""

    seeds: int = 5
    targets: dict[str, tuple[str, int | None, int, int]] = field(
        default_factory=lambda: {
            "small-similar": (SIMILAR, 10, 30, 10),
            "small-different": (DIFFERENT, 10, 30, 20),
            "large-similar": (SIMILAR, None, 2, 256),
            "large-different": (DIFFERENT, None, 6, 64),
        }
    )
    k_curve: tuple[str, ...] = ("small-similar", "small-different")
    limit_train: int | None = None  # large targets: the first N training images (tests only)
    stages: int = 4  # SpeedNet's: stem, groups.0, groups.1, groups.2
    # one intra-op thread: on a shared 2-core machine two OpenMP threads spin at every barrier
    threads: int | None = 1
    only_arms: tuple[str, ...] | None = None  # run only these arms (tests)
    # the CPU budget: large-similar, the costliest target (30,000 images), runs without this arm
    discriminative_on: tuple[str, ...] = ("small-similar", "small-different", "large-different")


def arms_of(target: str, protocol: Protocol) -> list[str]:
    arms = ["head", "finetune", "scratch"] + ["discriminative"] * (target in protocol.discriminative_on)
    if target.startswith("large"):
        arms.append("finetune_half")
    if target in protocol.k_curve:
        arms += [f"keep{k}" for k in range(1, protocol.stages)]
    return [a for a in arms if protocol.only_arms is None or a in protocol.only_arms]


def arm_overrides(arm: str, target: str, protocol: Protocol, source: Path) -> dict[str, Any]:
    dataset, per_class, epochs, batch = protocol.targets[target]
    keys = {**COMMON, "data.dataset": dataset, "data.val_size": 0, "data.batch_size": batch}
    keys["train.threads"] = protocol.threads
    keys |= {"train.epochs": epochs, "data.per_class": per_class}
    if per_class is None and protocol.limit_train:
        keys["data.limit_train"] = protocol.limit_train
    src = source_config(source)
    keys |= {"model.name": src.model.name, "model.options": src.model.options}
    pretrained = {"model.pretrained": str(source), "model.init": None}
    if arm == "scratch":
        return keys | {"model.init": src.model.init}
    if arm == "head":
        return keys | pretrained | {"train.freeze": "backbone", "optim.lr": HEAD_LR}
    if arm.startswith("keep"):
        frozen = {"train.freeze": "backbone", "optim.lr": HEAD_LR}
        return keys | pretrained | frozen | {"model.keep_stages": int(arm[4:])}
    if arm == "discriminative":
        return keys | pretrained | {"optim.lr_mult": 0.1}
    if arm == "finetune_half":
        return keys | pretrained | {"train.epochs": max(epochs // 2, 1)}
    return keys | pretrained  # finetune


def run_arm(keys: dict[str, Any], seed: int) -> dict[str, Any]:
    """{accuracy, seconds, history} of one training run, or {diverged: True}."""
    cfg = load_config(SOURCE_RECIPE, {**keys, "train.seed": seed})
    try:
        result = train(cfg, None, progress=False)
    except TrainingDiverged as e:
        return {"diverged": True, "error": str(e)}
    s = result.summary
    return {"accuracy": s["test_accuracy"], "seconds": s["total_seconds"], "diverged": False}


def measure_runs(
    source: Path, protocol: Protocol, targets: list[str], log: Callable[[str], None] = lambda m: None
) -> dict[str, dict[str, list[dict]]]:
    """{target: {arm: [one result per seed]}}."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for target in targets:
        runs[target] = {arm: [] for arm in arms_of(target, protocol)}
        for seed in range(protocol.seeds):
            for arm in runs[target]:
                runs[target][arm].append(run_arm(arm_overrides(arm, target, protocol, source), seed))
            done = {a: r[-1].get("accuracy") for a, r in runs[target].items()}
            log(f"{target} seed {seed}: " + ", ".join(f"{a} {v:.3f}" for a, v in done.items() if v))
    return runs


def accuracies(results: list[dict]) -> list[float | None]:
    return [None if r["diverged"] else r["accuracy"] for r in results]


def summary_of(results: list[dict]) -> dict[str, Any]:
    """mean, std, 95% CI over the seeds that did not diverge, and the number that did."""
    values = [v for v in accuracies(results) if v is not None]
    out: dict[str, Any] = {"n": len(values), "diverged": len(results) - len(values), "values": values}
    if len(values) >= 2:
        mean, low, high = t_interval(values)
        out |= {"mean": mean, "std": float(np.std(values, ddof=1)), "ci95": [low, high]}
    elif values:
        out |= {"mean": values[0], "std": 0.0, "ci95": None}
    return out


def paired(a: list[dict], b: list[dict]) -> dict[str, Any]:
    """The difference a - b per seed (seeds where both ran without diverging), with its 95% CI and the
    verdict of `a >= b`: supported (CI >= 0), not supported (CI < 0), inconclusive (straddles 0)."""
    diffs = [x - y for x, y in zip(accuracies(a), accuracies(b)) if x is not None and y is not None]
    out: dict[str, Any] = {"pairs": len(diffs), "diverged": len(a) - len(diffs), "differences": diffs}
    if len(diffs) < 2:
        return out | {"verdict": "inconclusive", "mean": float("nan"), "ci95": None}
    mean, low, high = t_interval(diffs)
    if math.isnan(low):  # every difference equal: no spread
        low = high = mean
    return out | {"mean": mean, "ci95": [low, high], "verdict": threshold_verdict(low, high, 0.0)}


def best_early_k(arms: dict[str, list[dict]]) -> str:
    """The keep-k arm (k < K) with the highest mean accuracy."""
    keeps = [a for a in arms if a.startswith("keep")]
    return max(keeps, key=lambda a: summary_of(arms[a]).get("mean", -1.0))


def recommendations(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, Any]]:
    """The four verdicts, each from its paired comparisons (a target that was not run is skipped)."""
    rules: dict[str, list[tuple[str, str, str]]] = {  # (rule, arm a, arm b): a >= b
        "small-similar": [("head-only >= full fine-tuning", "head", "finetune")],
        "large-similar": [("full fine-tuning >= head-only", "finetune", "head")],
        "large-different": [
            ("fine-tuning >= scratch, equal epochs", "finetune", "scratch"),
            ("fine-tuning at half the epochs >= scratch at all of them", "finetune_half", "scratch"),
        ],
    }
    if "small-different" in runs and any(a.startswith("keep") for a in runs["small-different"]):
        k = best_early_k(runs["small-different"])
        rules["small-different"] = [(f"best k < all stages ({k}, by mean) >= all stages", k, "head")]
    out = {}
    for name in ("small-similar", "small-different", "large-similar", "large-different"):
        if name in runs and name in rules:
            parts = [{"rule": rule, **paired(runs[name][a], runs[name][b])} for rule, a, b in rules[name]]
            out[name] = {
                "rule": "; ".join(p["rule"] for p in parts),
                "mean": parts[-1]["mean"],
                "checks": parts,
                "verdict": combine_verdicts([p["verdict"] for p in parts]),
            }
    return out


@register_experiment(
    "transfer",
    claim="The lecture's four transfer scenarios: small & similar: train a new head on the frozen net; "
    "small & different: keep only the early layers; large & similar: fine-tune everything; large & "
    "different: fine-tuning beats scratch (here: reaches its accuracy in at most half the epochs).",
    lecture="DNN & CNN: transfer learning",
)
def transfer_experiment(ctx: Context) -> Outcome:
    protocol = Protocol(seeds=max(ctx.seeds, 2 if ctx.quick else 5))
    ctx.seeds = protocol.seeds
    if ctx.quick:  # about a minute of training: a check that it all runs, not a measurement
        protocol.limit_train, protocol.k_curve = 512, ("small-different",)
        protocol.targets = {
            k: (d, p, 2 if p is None else 6, b) for k, (d, p, e, b) in protocol.targets.items()
        }
    if ctx.quick:  # a source of seconds, beside the results
        source = default_source(ctx.progress, ctx.out / "quick-source", QUICK_SOURCE)
    else:
        source = default_source(ctx.progress)
    ctx.log(f"source {source}; {protocol.seeds} seeds")
    runs = measure_runs(source, protocol, list(protocol.targets), ctx.log)
    verdicts = recommendations(runs)
    stats = {t: {a: summary_of(r) for a, r in arms.items()} for t, arms in runs.items()}
    ls = runs["large-similar"]
    goals = {
        "small-similar head-only accuracy": stats["small-similar"]["head"],
        "small-similar scratch accuracy (50 images)": stats["small-similar"]["scratch"],
        "large-similar finetune - scratch (equal epochs)": paired(ls["finetune"], ls["scratch"]),
        "large-similar finetune at half the epochs - scratch": paired(ls["finetune_half"], ls["scratch"]),
    }
    checks = [
        check(f"{name}: {v['rule']}", v["mean"], "paired 95% CI >= 0", v["verdict"] == "supported")
        for name, v in verdicts.items()
    ]
    head_mean = goals["small-similar head-only accuracy"].get("mean", float("nan"))
    checks.append(check("goal: small-similar head-only accuracy", head_mean, ">= 0.80", head_mean >= 0.80))
    for name in list(goals)[2:]:
        g = goals[name]
        checks.append(check(f"goal: {name}", g["mean"], "paired 95% CI >= 0", g["verdict"] == "supported"))
    draw(ctx, stats, protocol)
    source_summary = source_config(source)
    measured = {
        "verdicts": verdicts,
        "goals": goals,
        "accuracy": stats,
        "source": {"run": str(source), "config_model": asdict(source_summary.model)},
    }
    return Outcome(measured, checks, {"protocol": asdict(protocol)}, notes(verdicts, stats, protocol))


def fmt(s: dict[str, Any]) -> str:
    if "mean" not in s:
        return "diverged"
    ci = s.get("ci95")
    text = f"{100 * s['mean']:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    return text + (f" ({s['diverged']} diverged)" if s.get("diverged") else "")


def protocol_text(protocol: Protocol) -> str:
    targets = "; ".join(
        f"{name}: `{d}`, {f'{p} labels per class' if p else 'every training image'}"
        + (f" (the first {protocol.limit_train})" if p is None and protocol.limit_train else "")
        + f", {e} epochs at batch {b}"
        for name, (d, p, e, b) in protocol.targets.items()
    )
    return (
        f"**Protocol.** Source: SpeedNet (`cpu-fast`, 3 epochs) on Fashion-MNIST classes 0-4, trained once "
        f"(seed 0). Targets: {targets}. No validation split (`data.val_size = 0`): every number is test "
        f"accuracy (Fashion-MNIST 5-9: 5,000 test images; digits: 355). {protocol.seeds} seeds; seed s "
        "draws the same labelled subset and batch order for every arm. Recipe: `cpu-fast` without flips "
        f"(hflip, TTA); heads trained alone at lr {HEAD_LR}, everything else at the recipe's 0.2 (one-cycle, "
        "Nesterov SGD); discriminative: `optim.lr_mult = 0.1`; scratch: the source's own initialisation "
        "(patch whitening). Keep-k arms on "
        f"{', '.join(protocol.k_curve)}; the discriminative arm on {', '.join(protocol.discriminative_on)} "
        "(not on large-similar, the costliest target, for the CPU budget). Verdicts: a paired difference "
        "over seeds, 95% t interval; supported when it lies at or above 0, not supported below, "
        "inconclusive when it straddles 0; mixed when a recommendation's sub-checks disagree. The best k "
        "(small-different) is chosen on the same test numbers it is judged on, which favours it."
    )


def notes(verdicts: dict, stats: dict, protocol: Protocol) -> str:
    lines = [
        protocol_text(protocol),
        "",
        "| recommendation | rule | mean difference [95% CI] | verdict |",
        "|---|---|---|---|",
    ]
    for name, v in verdicts.items():
        for c in v["checks"]:
            ci = c.get("ci95")
            diff = f"{100 * c['mean']:+.1f} pts" + (
                f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
            )
            lines.append(f"| {name} | {c['rule']} | {diff} | {c['verdict']} |")
        lines.append(f"| **{name}** | | | **{v['verdict']}** |")
    arms = sorted({a for t in stats.values() for a in t}, key=lambda a: (a.startswith("keep"), a))
    lines += ["", "Test accuracy, mean [95% CI] over seeds:", "", "| target | " + " | ".join(arms) + " |"]
    lines.append("|---" * (len(arms) + 1) + "|")
    for target, row in stats.items():
        lines.append(f"| {target} | " + " | ".join(fmt(row[a]) if a in row else "" for a in arms) + " |")
    return "\n".join(lines)


def draw(ctx: Context, stats: dict, protocol: Protocol) -> None:
    fig, (ax_k, ax_bar) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, target in enumerate(t for t in protocol.k_curve if t in stats):
        row = stats[target]
        ks = list(range(1, protocol.stages + 1))
        arms = [f"keep{k}" for k in ks[:-1]] + ["head"]
        means = [100 * row[a].get("mean", np.nan) for a in arms]
        color = plt.cm.tab10(i)
        ax_k.plot(ks, means, marker="o", color=color, label=f"{target}: frozen, first k stages")
        ax_k.axhline(100 * row["finetune"].get("mean", np.nan), color=color, ls="--", lw=1)
        ax_k.axhline(100 * row["scratch"].get("mean", np.nan), color=color, ls=":", lw=1)
    ax_k.set(xlabel="stages kept (k)", ylabel="test accuracy (%)", title="Keep k stages + new head")
    ax_k.set_xticks(range(1, protocol.stages + 1))
    ax_k.legend(fontsize=8, title="dashed: fine-tune, dotted: scratch", title_fontsize=8)
    names = ["head", "finetune", "discriminative", "scratch"]
    width = 0.8 / len(names)
    for j, arm in enumerate(names):
        cells = [stats[t].get(arm, {}) for t in stats]
        means = [100 * c.get("mean", np.nan) for c in cells]
        errors = [100 * (c["ci95"][1] - c["mean"]) if c.get("ci95") else 0 for c in cells]
        x = np.arange(len(stats)) + (j - (len(names) - 1) / 2) * width
        ax_bar.bar(x, means, width, yerr=errors, capsize=3, label=arm, color=plt.cm.Set2(j))
    ax_bar.set_xticks(range(len(stats)), list(stats), fontsize=9)
    ax_bar.set(ylabel="test accuracy (%)", title="Arms per scenario (95% CI over seeds)")
    ax_bar.set_ylim(0, 100)
    ax_bar.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    ctx.figure("transfer.png", fig, "Yosinski-style curve (left) and the arms of each scenario (right)")
