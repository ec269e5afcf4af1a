"""Regularisation on a training subset small enough to overfit: none, L2, L1, elastic net, dropout 0.2 and
0.5, early stopping and augmentation (trainlab.nn.regularize, trainlab.data.augment). The lectures'
figures: without regularisation the train/validation gap keeps growing; with it the gap stays small.
L1 also drives weights to exactly (or nearly) zero: sparsity.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from trainlab.data.augment import Augment
from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    evaluate,
    fashion_split,
    load_images,
    pixel_space,
    register_experiment,
    train_classifier,
)
from trainlab.models import create_model
from trainlab.nn.regularize import create_penalty

VARIANTS = {  # name: (mlp dropout, penalty (name, strength, options), augmentation spec)
    "none": (0.0, None, ""),
    "L2 (1e-3)": (0.0, ("l2", 1e-3, {}), ""),
    "L1 (2e-4)": (0.0, ("l1", 2e-4, {}), ""),
    "elastic net (2e-4, beta 5)": (0.0, ("elastic_net", 2e-4, {"beta": 5.0}), ""),
    "dropout 0.2": (0.2, None, ""),
    "dropout 0.5": (0.5, None, ""),
    "early stopping": (0.0, None, ""),
    "augmentation": (0.0, None, "translate=2,random_erasing"),
}
SPARSE = 1e-3  # |w| below this counts as zero
LR = 0.05  # penalties are sums over all weights: strength * lr sets how fast they shrink W per step


def test_split(device, standardizer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_images()
    return standardizer(data.test_images[:n]).to(device), data.test_labels[:n].to(device)


@register_experiment(
    "regularization",
    claim="On a small training set the unregularised net overfits (a large train/validation gap); L2, L1, "
    "elastic net, dropout, early stopping and augmentation shrink the gap and improve held-out accuracy; "
    "L1 makes the weights sparse.",
    lecture="regularisation",
)
def regularization_experiment(ctx: Context) -> Outcome:
    data = fashion_split(ctx.device, ctx.pick(1000, 2000), ctx.pick(1000, 2000))
    x_test, y_test = test_split(ctx.device, data.standardizer, ctx.pick(1000, 10000))
    epochs, widths = ctx.pick(8, 40), ctx.pick([256, 256], [512, 512])
    curves, test_acc, gap, sparsity, stopped = {}, {}, {}, {}, {}
    for name, (dropout, penalty, spec) in VARIANTS.items():
        hs, accs, sparse = [], [], []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            model = create_model("mlp", widths=widths, dropout=dropout).to(ctx.device)
            best = {"acc": -1.0, "state": None, "epoch": 0}
            on_epoch = keep_best(model, data, best) if name == "early stopping" else None
            aug = Augment(spec, seed=seed, num_classes=10, device=str(ctx.device)) if spec else None
            aug = pixel_space(aug, data.standardizer) if aug else None
            h = train_classifier(
                model,
                data,
                epochs=epochs,
                lr=LR,
                momentum=0.9,
                seed=seed,
                penalty=create_penalty(*penalty[:2], **penalty[2]) if penalty else None,
                augment=aug,
                on_epoch=on_epoch,
            )
            if best["state"] is not None:
                model.load_state_dict(best["state"])
                stopped.setdefault(name, []).append(best["epoch"])
            hs.append(h)
            accs.append(evaluate(model, x_test, y_test)[1])
            first = model.net[1].weight.detach()
            sparse.append(float((first.abs() < SPARSE).float().mean()))
        curves[name] = {k: np.mean([h[k] for h in hs], axis=0) for k in ("train_accuracy", "val_accuracy")}
        test_acc[name] = float(np.mean(accs))
        end = stopped.get(name, [epochs])
        gap[name] = float(
            np.mean([h["train_accuracy"][e - 1] - h["val_accuracy"][e - 1] for h, e in zip(hs, end)])
        )
        sparsity[name] = float(np.mean(sparse))
        ctx.log(f"{name}: test {test_acc[name]:.4f} gap {gap[name]:.4f}")
    draw_gaps(ctx, curves, stopped)
    draw_summary(ctx, test_acc, gap, sparsity)

    regularised = [n for n in VARIANTS if n != "none"]
    smaller_gap = sum(gap[n] < gap["none"] for n in regularised) / len(regularised)
    better = sum(test_acc[n] > test_acc["none"] for n in regularised) / len(regularised)
    checks = [
        check(
            "no regularisation: final train - val accuracy",
            gap["none"],
            "> 0.05 (it overfits)",
            gap["none"] > 0.05,
        ),
        check(
            "share of regularisers with a smaller gap than none", smaller_gap, ">= 0.75", smaller_gap >= 0.75
        ),
        check("share of regularisers with a higher test accuracy than none", better, ">= 0.5", better >= 0.5),
        check(
            "first-layer share |w| < 1e-3: L1 minus none",
            sparsity["L1 (2e-4)"] - sparsity["none"],
            "> 0.1",
            sparsity["L1 (2e-4)"] - sparsity["none"] > 0.1,
        ),
    ]
    measured = {
        "test_accuracy": test_acc,
        "train_minus_val_accuracy_at_end": gap,
        "first_layer_sparsity": sparsity,
        "early_stopping_epochs": stopped.get("early stopping"),
    }
    notes = (
        f"MLP 784-{'-'.join(map(str, widths))}-10 (ReLU) on {len(data.x_train)} Fashion-MNIST "
        "training images, "
        f"SGD momentum 0.9, lr {LR}, batch 128, {epochs} epochs, {ctx.seeds} seed(s); test accuracy on "
        f"{len(x_test)} images of the official test set. Early stopping keeps the weights of the epoch with "
        "the "
        "best validation accuracy. Augmentation: `translate=2,random_erasing` (trainlab.data.augment)."
    )
    return Outcome(
        measured, checks, {"variants": {k: list(v) for k, v in VARIANTS.items()}, "epochs": epochs}, notes
    )


def keep_best(model: nn.Module, data, best: dict):
    """An end-of-epoch hook that keeps the weights with the best validation accuracy (early stopping)."""

    def on_epoch(epoch: int, history: dict) -> None:
        if history["val_accuracy"][-1] > best["acc"]:
            best.update(
                acc=history["val_accuracy"][-1],
                epoch=epoch,
                state={k: v.detach().clone() for k, v in model.state_dict().items()},
            )

    return on_epoch


def draw_gaps(ctx: Context, curves: dict, stopped: dict) -> None:
    names = list(curves)
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5), sharey=True)
    for ax, name in zip(axes.flat, names):
        epochs = np.arange(1, len(curves[name]["val_accuracy"]) + 1)
        ax.plot(epochs, curves[name]["train_accuracy"], color="tab:blue", label="train")
        ax.plot(epochs, curves[name]["val_accuracy"], color="tab:orange", label="validation")
        ax.fill_between(
            epochs, curves[name]["val_accuracy"], curves[name]["train_accuracy"], color="grey", alpha=0.2
        )
        if name in stopped:
            ax.axvline(np.mean(stopped[name]), color="black", linestyle=":", label="stopped")
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("accuracy")
    axes[0, 0].legend()
    fig.suptitle("Train vs validation accuracy on a small training set (grey: the generalisation gap)")
    fig.tight_layout()
    ctx.figure("gaps.png", fig, "Train/validation gap curves for each regulariser")


def draw_summary(ctx: Context, test_acc: dict, gap: dict, sparsity: dict) -> None:
    names = list(test_acc)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    axes[0].barh(names, [test_acc[n] for n in names], color="tab:green")
    low = min(test_acc.values())
    axes[0].set(
        xlim=(low - 0.03, max(test_acc.values()) + 0.01), xlabel="test accuracy", title="Held-out accuracy"
    )
    axes[1].barh(names, [gap[n] for n in names], color="tab:red")
    axes[1].set(xlabel="train - validation accuracy", title="Generalisation gap at the end")
    axes[2].barh(names, [sparsity[n] for n in names], color="tab:purple")
    axes[2].set(xlabel=f"share of first-layer |w| < {SPARSE:g}", title="Weight sparsity")
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
    axes[1].set_yticklabels([])
    axes[2].set_yticklabels([])
    ctx.figure("summary.png", fig, "Test accuracy, final gap and first-layer sparsity per regulariser")
