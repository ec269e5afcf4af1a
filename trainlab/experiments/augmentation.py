"""Data augmentation, one operation at a time: the same CNN trained on a 5k-image subset of
Fashion-MNIST with and without each augmentation (trainlab.data.augment), accuracy on the test set.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from trainlab.data.augment import Augment
from trainlab.experiments.batchnorm import norm_cnn
from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    evaluate,
    fashion_split,
    pixel_space,
    register_experiment,
    train_classifier,
)
from trainlab.experiments.regularization import test_split

QUICK = ["translate=2", "mixup=0.2"]
FULL = [
    "hflip",
    "translate=2",
    "rotate",
    "elastic",
    "random_erasing",
    "mixup=0.2",
    "cutmix",
    "trivialaugment",
]


@register_experiment(
    "augmentation",
    claim="Data augmentation improves held-out accuracy when training on a small (5k-image) subset.",
    lecture="data augmentation",
)
def augmentation_experiment(ctx: Context) -> Outcome:
    data = fashion_split(ctx.device, ctx.pick(1000, 5000), ctx.pick(1000, 2000))
    x_test, y_test = test_split(ctx.device, data.standardizer, ctx.pick(1000, 10000))
    epochs = ctx.pick(2, 6)
    specs = ["none"] + ctx.pick(QUICK, FULL)
    accuracy, spread, curves = {}, {}, {}
    for spec in specs:
        accs, hs = [], []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            model = norm_cnn("batch").to(ctx.device)
            aug = None
            if spec != "none":
                aug = pixel_space(
                    Augment(spec, seed=seed, num_classes=10, device=str(ctx.device)), data.standardizer
                )
            hs.append(
                train_classifier(model, data, epochs=epochs, lr=0.02, momentum=0.9, seed=seed, augment=aug)
            )
            accs.append(evaluate(model, x_test, y_test)[1])
        accuracy[spec], spread[spec] = float(np.mean(accs)), float(np.std(accs))
        curves[spec] = np.mean([h["val_accuracy"] for h in hs], axis=0)
        ctx.log(f"{spec}: {accuracy[spec]:.4f}")
    draw(ctx, accuracy, spread, curves)

    gains = {s: accuracy[s] - accuracy["none"] for s in specs[1:]}
    helped = sum(g > 0 for g in gains.values()) / len(gains)
    best = max(gains.values())
    checks = [
        check("share of augmentations that raise test accuracy", helped, ">= 0.5", helped >= 0.5),
        check("best gain in test accuracy", best, "> 0.005", best > 0.005),
    ]
    measured = {
        "test_accuracy": {s: {"mean": accuracy[s], "std": spread[s]} for s in specs},
        "gain_over_none": gains,
    }
    notes = (
        f"CNN conv3x3(16)-BN-ReLU-pool-conv3x3(32)-BN-ReLU-pool-linear on "
        f"{len(data.x_train)} training images, "
        f"SGD momentum 0.9, lr 0.02, batch 128, {epochs} epochs, {ctx.seeds} seed(s); test accuracy on "
        f"{len(x_test)} official test images. Augmentations run on the batch in pixel space [0, 1], with "
        "each operation's default strength (trainlab.data.augment); hflip is not label-preserving for every "
        "class of every dataset, but Fashion-MNIST's classes are left-right symmetric."
    )
    if curves["none"][-1] > curves["none"][:-1].max():
        notes += (
            " Without augmentation the validation accuracy was still rising at the last epoch: the net is "
            "not yet overfitting at this scale, so a regulariser has little to gain."
        )
    return Outcome(measured, checks, {"specs": specs, "epochs": epochs, "lr": 0.02}, notes)


def draw(ctx: Context, accuracy: dict, spread: dict, curves: dict) -> None:
    fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(14, 4.5))
    order = sorted(accuracy, key=accuracy.get)
    colors = [
        "tab:grey" if s == "none" else ("tab:green" if accuracy[s] > accuracy["none"] else "tab:red")
        for s in order
    ]
    ax_bar.barh(order, [accuracy[s] for s in order], xerr=[spread[s] for s in order], color=colors)
    ax_bar.axvline(accuracy["none"], color="black", linestyle=":")
    low, high = min(accuracy.values()), max(accuracy.values())
    ax_bar.set(xlim=(low - 0.02, high + 0.01), xlabel="test accuracy", title="Each augmentation alone")
    ax_bar.grid(alpha=0.3, axis="x")
    for spec, curve in curves.items():
        ax_curve.plot(
            range(1, len(curve) + 1),
            curve,
            marker="o",
            ms=3,
            label=spec,
            linewidth=2.5 if spec == "none" else 1.2,
            color="black" if spec == "none" else None,
        )
    ax_curve.set(xlabel="epoch", ylabel="validation accuracy", title="Convergence")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7, ncol=2)
    ctx.figure(
        "augmentation.png", fig, "Test accuracy and validation curves with each augmentation (green: helps)"
    )
