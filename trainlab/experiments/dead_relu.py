"""Dead ReLUs. A ReLU unit whose input is negative for every training example gets zero gradient and
never recovers; a large learning rate knocks units into that state (CS231n: "as much as 40% of your
network can be dead"). Leaky ReLU (Maas et al. 2013) keeps a small slope for x < 0, so its units still
learn; a small positive bias (0.01) is the lectures' other suggested remedy.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from trainlab.diagnose.activations import dead_unit_fraction
from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    fashion_split,
    register_experiment,
    train_classifier,
)
from trainlab.models import create_model

VARIANTS = {
    "ReLU": ("relu", None),
    "Leaky ReLU (0.01)": ("leaky_relu", None),
    "ReLU, bias 0.01": ("relu", 0.01),
}


def build(act: str, bias: float | None, widths: list[int]) -> nn.Module:
    model = create_model("mlp", widths=widths, act=act)
    if bias is not None:
        hidden = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
        for layer in hidden:
            nn.init.constant_(layer.bias, bias)
    return model


@register_experiment(
    "dead_relu",
    claim="With a high learning rate a large share of ReLU units die (never activate again); "
    "Leaky ReLU and a small positive bias reduce it.",
    lecture="activation functions",
)
def dead_relu_experiment(ctx: Context) -> Outcome:
    data = fashion_split(ctx.device, ctx.pick(3000, 10000), ctx.pick(1000, 2000))
    lrs = ctx.pick([0.03, 0.3, 1.0], [0.01, 0.1, 0.3, 0.6, 1.0, 1.5])
    widths, epochs = [256, 256, 256], ctx.pick(2, 3)
    dead = {name: {} for name in VARIANTS}
    accuracy = {name: {} for name in VARIANTS}
    for name, (act, bias) in VARIANTS.items():
        for lr in lrs:
            shares, accs = [], []
            for seed in range(ctx.seeds):
                torch.manual_seed(seed)
                model = build(act, bias, widths).to(ctx.device)
                history = train_classifier(model, data, epochs=epochs, lr=lr, momentum=0.0, seed=seed)
                if "diverged" in history:
                    continue
                shares.append(float(np.mean(list(dead_unit_fraction(model, data.x_train).values()))))
                accs.append(history["val_accuracy"][-1])
            dead[name][lr] = float(np.mean(shares)) if shares else None
            accuracy[name][lr] = float(np.mean(accs)) if accs else None
        ctx.log(f"{name}: {dead[name]}")
    draw(ctx, lrs, dead, accuracy)

    stable = [lr for lr in lrs if all(dead[n][lr] is not None for n in VARIANTS)]
    low, high = stable[0], stable[-1]
    relu_rise = dead["ReLU"][high] - dead["ReLU"][low]
    checks = [
        check(
            f"ReLU: dead share at lr {high} minus at lr {low}",
            relu_rise,
            "> 0.05 (more die at high lr)",
            relu_rise > 0.05,
        ),
        check(
            f"Leaky ReLU: never-active share at lr {high} minus ReLU's",
            dead["Leaky ReLU (0.01)"][high] - dead["ReLU"][high],
            "< 0 (fewer)",
            dead["Leaky ReLU (0.01)"][high] < dead["ReLU"][high],
        ),
        check(
            f"bias 0.01: dead share at lr {high} minus ReLU's",
            dead["ReLU, bias 0.01"][high] - dead["ReLU"][high],
            "< 0 (fewer)",
            dead["ReLU, bias 0.01"][high] < dead["ReLU"][high],
        ),
    ]
    measured = {
        "dead_share_by_lr": {n: {str(lr): v for lr, v in d.items()} for n, d in dead.items()},
        "val_accuracy_by_lr": {n: {str(lr): v for lr, v in d.items()} for n, d in accuracy.items()},
        "highest_lr_without_divergence": high,
    }
    notes = (
        f"MLP 784-{'-'.join(map(str, widths))}-10, plain SGD (no momentum), batch 128, {epochs} epochs "
        f"on {len(data.x_train)} Fashion-MNIST images, {ctx.seeds} seed(s). A unit is dead when its input "
        "is <= 0 for every training image after training (trainlab.diagnose.dead_unit_fraction); "
        "for Leaky ReLU that "
        "unit is only never-positive, it still gets a 0.01 gradient. Runs whose loss diverged are left out "
        "(None); the checks use the highest learning rate at which no variant diverged."
    )
    return Outcome(measured, checks, {"lrs": lrs, "widths": widths, "epochs": epochs}, notes)


def draw(ctx: Context, lrs: list[float], dead: dict, accuracy: dict) -> None:
    fig, (ax_dead, ax_acc) = plt.subplots(1, 2, figsize=(12, 4))
    for name in VARIANTS:
        xs = [lr for lr in lrs if dead[name][lr] is not None]
        ax_dead.plot(xs, [dead[name][lr] for lr in xs], marker="o", label=name)
        ax_acc.plot(xs, [accuracy[name][lr] for lr in xs], marker="o", label=name)
    ax_dead.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="share of hidden units never active",
        title="Dead units after training",
    )
    ax_acc.set(xscale="log", xlabel="learning rate", ylabel="validation accuracy", title="Accuracy")
    for ax in (ax_dead, ax_acc):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    ctx.figure("dead_units.png", fig, "Share of dead hidden units against learning rate")
