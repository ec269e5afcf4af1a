"""Dropout at test time: averaging over masks versus one deterministic, rescaled pass.

For a unit a = w . (m * h) with masks m_i ~ Bernoulli(keep), E[a] = keep * (w . h) (the lectures' E[a]
argument; Srivastava et al. 2014). So either the test-time pass multiplies by keep ("test" scaling), or
training divides by keep and the test pass is left alone ("inverted", what every framework does). Both
must match the Monte-Carlo average over masks; dropping the rescaling does not.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    evaluate,
    fashion_split,
    register_experiment,
    train_classifier,
)
from trainlab.nn.regularize import Dropout

CONVENTIONS = {"inverted (scale at train)": "train", "test-time scaling": "test"}


def dropout_mlp(p: float, scale_at: str, width: int = 512) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, width),
        nn.ReLU(),
        Dropout(p, scale_at),
        nn.Linear(width, width),
        nn.ReLU(),
        Dropout(p, scale_at),
        nn.Linear(width, 10),
    )


@torch.no_grad()
def layer_expectation(model: nn.Sequential, x: torch.Tensor, samples: list[int]) -> dict[int, float]:
    """Relative error between the deterministic pre-activation of layer 2 and its mean over T masks."""
    h = model[2](model[1](model[0](x)))  # (B, width): the first hidden layer, before dropout
    dropout, linear = model[3], model[4]
    dropout.eval()
    exact = linear(dropout(h))
    dropout.train()
    total, results, drawn = torch.zeros_like(exact), {}, 0
    for t in samples:
        while drawn < t:
            total += linear(dropout(h))
            drawn += 1
        results[t] = float((total / t - exact).norm() / exact.norm())
    dropout.eval()
    return results


@torch.no_grad()
def mc_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int) -> float:
    """Accuracy of the softmax averaged over `samples` dropout masks (MC dropout; Gal & Ghahramani 2016)."""
    model.train()
    probs = sum(model(x).softmax(1) for _ in range(samples)) / samples
    model.eval()
    return float((probs.argmax(1) == y).float().mean())


@register_experiment(
    "dropout_inference",
    claim="The deterministic rescaled network equals the expectation over dropout masks (E[a] = keep * w.x), "
    "for both scaling conventions: Monte-Carlo averaging converges to it.",
    lecture="regularisation: dropout",
)
def dropout_inference_experiment(ctx: Context) -> Outcome:
    p = 0.5
    data = fashion_split(ctx.device, ctx.pick(2000, 20000), ctx.pick(1000, 2000))
    samples = ctx.pick([1, 4, 16, 64, 256], [1, 4, 16, 64, 256, 1024])
    mc_samples = ctx.pick(32, 128)
    x_small = data.x_val[:256]
    errors, accuracy, unscaled = {}, {}, {}
    for name, scale_at in CONVENTIONS.items():
        per_seed, acc_det, acc_mc = [], [], []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            model = dropout_mlp(p, scale_at).to(ctx.device)
            train_classifier(model, data, epochs=ctx.pick(2, 8), lr=0.05, momentum=0.9, seed=seed)
            per_seed.append(layer_expectation(model, x_small, samples))
            acc_det.append(evaluate(model, data.x_val, data.y_val)[1])
            acc_mc.append(mc_accuracy(model, data.x_val, data.y_val, mc_samples))
        errors[name] = {t: float(np.mean([r[t] for r in per_seed])) for t in samples}
        accuracy[name] = {
            "deterministic": float(np.mean(acc_det)),
            f"MC over {mc_samples} masks": float(np.mean(acc_mc)),
        }
        unscaled[name] = control_error(model, x_small, p, scale_at)
    draw(ctx, samples, errors, unscaled, accuracy)

    checks = []
    for name in CONVENTIONS:
        slope = float(np.polyfit(np.log(samples), np.log([errors[name][t] for t in samples]), 1)[0])
        checks.append(
            check(
                f"{name}: slope of log error against log T",
                slope,
                "in [-0.6, -0.4] (unbiased: error ~ 1/sqrt(T), no floor)",
                -0.6 <= slope <= -0.4,
            )
        )
        gap = abs(accuracy[name]["deterministic"] - accuracy[name][f"MC over {mc_samples} masks"])
        checks.append(check(f"{name}: |accuracy deterministic - MC|", gap, "< 0.01", gap < 0.01))
        checks.append(
            check(
                f"{name}: relative error without the rescaling",
                unscaled[name],
                "> 0.3 (control)",
                unscaled[name] > 0.3,
            )
        )
    measured = {
        "relative_error_of_mc_mean_by_masks": {
            n: {str(t): v for t, v in e.items()} for n, e in errors.items()
        },
        "relative_error_without_rescaling": unscaled,
        "val_accuracy": accuracy,
    }
    notes = (
        f"MLP 784-512-512-10 with dropout p = {p} after each hidden ReLU (trainlab.nn.regularize.Dropout), "
        f"trained with SGD (momentum 0.9, lr 0.05) on {len(data.x_train)} Fashion-MNIST images, "
        f"{ctx.seeds} seed(s). The error is "
        "||mean over T masks of W2 (dropout(h1)) - W2 (test-time pass of h1)|| / ||test-time pass|| on 256 "
        "validation images. If the rescaled pass is the expectation over masks, the error of the mean keeps "
        "falling like 1 / sqrt(T) (slope -0.5 on log-log axes); a bias would show as a floor. "
        "The control drops the rescaling from the test pass."
    )
    return Outcome(measured, checks, {"p": p, "samples": samples, "mc_samples": mc_samples}, notes)


@torch.no_grad()
def control_error(model: nn.Sequential, x: torch.Tensor, p: float, scale_at: str) -> float:
    """Relative error of a test pass without rescaling against the true expectation over masks."""
    h = model[2](model[1](model[0](x)))
    keep = 1 - p
    expected = model[4](h * (1.0 if scale_at == "train" else keep))  # E over masks of the training pass
    wrong = model[4](h * (1 / keep if scale_at == "train" else 1.0))  # inverted masks scaled, or unscaled
    return float((wrong - expected).norm() / expected.norm())


def draw(ctx: Context, samples: list[int], errors: dict, unscaled: dict, accuracy: dict) -> None:
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4))
    for (name, e), color in zip(errors.items(), ("tab:blue", "tab:orange")):
        ax.loglog(samples, [e[t] for t in samples], marker="o", color=color, label=f"{name}: MC mean")
        ax.axhline(unscaled[name], color=color, linestyle=":", label=f"{name}: no rescaling")
    ref = errors[next(iter(errors))][samples[0]]
    ax.loglog(samples, [ref / np.sqrt(t) for t in samples], color="grey", linestyle="--", label="1 / sqrt(T)")
    ax.set(
        xlabel="masks averaged (T)",
        ylabel="relative error vs deterministic pass",
        title="E[a] over masks = the rescaled pass",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    names = list(accuracy)
    kinds = list(accuracy[names[0]])
    for i, kind in enumerate(kinds):
        ax_acc.bar(
            np.arange(len(names)) + 0.35 * i, [accuracy[n][kind] for n in names], width=0.35, label=kind
        )
    ax_acc.set_xticks(np.arange(len(names)) + 0.175, names)
    values = [v for n in names for v in accuracy[n].values()]
    ax_acc.set(
        ylim=(min(values) - 0.05, min(1.0, max(values) + 0.03)),
        ylabel="validation accuracy",
        title="Deterministic vs MC",
    )
    ax_acc.legend()
    ctx.figure(
        "dropout_inference.png",
        fig,
        "Monte-Carlo averaging over dropout masks converges to the rescaled network",
    )
