"""Data preprocessing compared on the same network: raw pixels, zero-centring (mean image or per channel),
standardising, PCA whitening and ZCA whitening (trainlab.data.preprocess). The lectures' advice for
images: centre (and perhaps scale) the data; PCA and whitening are not common for images.
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
    fashion_split,
    register_experiment,
    train_classifier,
)

MODES = {  # mode: Standardizer options
    "none": {},
    "mean_image": {},
    "channel_mean": {},
    "channel_mean_std": {},
    "pca_whiten": {"variance": 0.99},
    "zca_whiten": {},
}
CENTRED = ("mean_image", "channel_mean", "channel_mean_std")


def mlp_for(features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


@register_experiment(
    "preprocessing",
    claim="Zero-centred (and scaled) inputs train faster and better than raw pixels; PCA or ZCA whitening "
    "brings no further gain on images.",
    lecture="data preprocessing",
)
def preprocessing_experiment(ctx: Context) -> Outcome:
    epochs = ctx.pick(3, 10)
    curves, final, examples, diverged = {}, {}, {}, {}
    for mode, options in MODES.items():
        data = fashion_split(
            ctx.device, ctx.pick(2000, 20000), ctx.pick(1000, 2000), preprocess=mode, **options
        )
        runs = []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            model = mlp_for(data.x_train[0].numel()).to(ctx.device)
            runs.append(train_classifier(model, data, epochs=epochs, lr=0.01, momentum=0.9, seed=seed))
        ok = [r for r in runs if "diverged" not in r]
        diverged[mode] = len(runs) - len(ok)
        curves[mode] = np.mean([r["val_accuracy"] for r in ok], axis=0) if ok else np.full(epochs, 0.1)
        final[mode] = float(curves[mode][-1])
        examples[mode] = as_images(data)
        ctx.log(f"{mode}: {final[mode]:.4f}")
    draw_curves(ctx, curves, epochs)
    draw_examples(ctx, examples)

    best_centred = max(final[m] for m in CENTRED)
    best_whitened = max(final["pca_whiten"], final["zca_whiten"])
    first = {m: float(curves[m][0]) for m in MODES}
    checks = [
        check(
            "final val accuracy: best centred - raw",
            best_centred - final["none"],
            "> 0.02",
            best_centred - final["none"] > 0.02,
        ),
        check(
            "epoch-1 val accuracy: channel_mean_std - raw",
            first["channel_mean_std"] - first["none"],
            "> 0 (converges faster)",
            first["channel_mean_std"] > first["none"],
        ),
        check(
            "final val accuracy: best whitening - channel_mean_std",
            best_whitened - final["channel_mean_std"],
            "< 0.01 (no further gain)",
            best_whitened - final["channel_mean_std"] < 0.01,
        ),
    ]
    measured = {
        "final_val_accuracy": final,
        "val_accuracy_by_epoch": {m: [round(float(v), 4) for v in c] for m, c in curves.items()},
        "diverged_runs": diverged,
    }
    notes = (
        f"MLP (input features)-256-256-10, ReLU, SGD momentum 0.9, lr 0.01, batch 128, {epochs} epochs on "
        f"{ctx.pick(3000, 20000)} Fashion-MNIST images, {ctx.seeds} seed(s); statistics fitted on the "
        "training "
        "images only. `none` is raw pixels in [0, 255]; pca_whiten keeps 99% of the variance (its input is "
        "the k components); zca_whiten uses eps = 5e-4 of the largest eigenvalue (about 1e-2 here). "
        "A diverged run is shown at chance."
    )
    return Outcome(measured, checks, {"modes": MODES, "epochs": epochs, "lr": 0.01}, notes)


def as_images(data) -> torch.Tensor:
    """Six validation images as the network sees them; PCA outputs are mapped back through U_k."""
    x = data.x_val[:6]
    if x.dim() == 2:  # (N, k) whitened components -> pixel space
        x = (x @ data.standardizer.stats["components"].to(x.device).T).view(-1, 1, 28, 28)
    return x.cpu()


def draw_curves(ctx: Context, curves: dict, epochs: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode, curve in curves.items():
        ax.plot(range(1, epochs + 1), curve, marker="o", label=mode)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="The same MLP under each preprocessing")
    ax.grid(alpha=0.3)
    ax.legend()
    ctx.figure("curves.png", fig, "Validation accuracy per epoch for each preprocessing mode")


def draw_examples(ctx: Context, examples: dict) -> None:
    fig, axes = plt.subplots(len(examples), 6, figsize=(8, 1.45 * len(examples)))
    for row, (mode, images) in enumerate(examples.items()):
        for col in range(6):
            image = images[col, 0].numpy()
            limit = float(np.abs(image).max()) or 1.0
            cmap = "gray" if mode == "none" else "RdBu_r"
            vmin = 0 if mode == "none" else -limit
            axes[row, col].imshow(image, cmap=cmap, vmin=vmin, vmax=limit)
            axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(mode, fontsize=8)
    fig.suptitle("What the network sees (red: positive, blue: negative)")
    ctx.figure(
        "examples.png", fig, "Validation images after each preprocessing; whitening leaves mostly edges"
    )
