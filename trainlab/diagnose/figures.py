"""Diagnostic figures and diagnostics JSON, written into the run directory's diagnostics/ folder.

activations.png            mean, std, near-zero, saturated and dead share per layer over training
activation_histograms.png  one panel per layer: the distribution of values (y) over steps (x)
gradients.png              gradient norm per layer over training, and the update/weight ratio
gradient_flow.png          mean gradient norm against depth
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from trainlab.io import atomic_write_json
from trainlab.report.figures import plain_legend, save_figure


def layer_colors(n: int):
    return plt.cm.viridis(np.linspace(0, 0.9, max(n, 1)))


def update_json(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    atomic_write_json(path, data)


def write_activation_report(stats, out: Path) -> None:
    out = Path(out)
    h = stats.history()
    if not h["steps"]:
        return
    labels = [f"{i + 1}: {kind} ({name})" for i, (name, kind) in enumerate(zip(h["layers"], h["kinds"]))]
    colors = layer_colors(len(labels))
    fig, axes = plt.subplots(1, 5, figsize=(22, 3.8))
    titles = {
        "mean": "mean",
        "std": "std",
        "near_zero": f"share |a| < {stats.near_zero:g}",
        "saturated": "share saturated (sigmoid, tanh)",
        "dead": f"share of dead units ({stats.dead_window} batches)",
    }
    for ax, (stat, title) in zip(axes, titles.items()):
        values = h[stat]
        shown = [i for i in range(len(labels)) if not torch.isnan(values[:, i]).all()]
        for i in shown:
            ax.plot(h["steps"], values[:, i], color=colors[i], label=labels[i])
        if not shown:
            ax.text(0.5, 0.5, "no layer of this kind", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
    plain_legend(axes[0], fontsize=7)
    fig.suptitle("Activation statistics per layer", y=1.03)
    save_figure(fig, out / "activations.png")

    histograms = stats.histograms()
    cols = min(len(histograms), 4)
    rows = math.ceil(len(histograms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, hist, label in zip(axes.flat, histograms, labels):
        edges = hist["edges"].numpy()
        density = hist["counts"].T.numpy()
        ax.imshow(
            np.log1p(density),
            aspect="auto",
            origin="lower",
            extent=(hist["steps"][0], hist["steps"][-1], edges[0], edges[-1]),
            cmap="magma",
        )
        ax.set_title(label, parse_math=False)  # a layer name, drawn as it is
        ax.set(xlabel="step", ylabel="activation value")
    for ax in list(axes.flat)[len(histograms) :]:
        ax.axis("off")
    fig.suptitle("Activation histograms over training (colour: log(1 + count))")
    fig.tight_layout()
    save_figure(fig, out / "activation_histograms.png")
    update_json(out / "diagnostics.json", "activations", stats.summary())


def write_gradient_report(stats, out: Path) -> None:
    out = Path(out)
    h = stats.history()
    if not h["steps"]:
        return
    colors = layer_colors(len(h["params"]))
    fig, (ax_grad, ax_ratio) = plt.subplots(1, 2, figsize=(12, 4))
    for i, name in enumerate(h["params"]):
        ax_grad.plot(h["steps"], h["grad_norm"][:, i].clamp_min(1e-30), color=colors[i], label=name)
        ax_ratio.plot(h["steps"], h["update_ratio"][:, i].clamp_min(1e-30), color=colors[i], label=name)
    ax_ratio.axhline(1e-3, color="red", linestyle="--", label="1e-3 rule of thumb")
    ax_grad.set(yscale="log", xlabel="step", ylabel="||dL/dW||", title="Gradient norm per layer")
    ax_ratio.set(yscale="log", xlabel="step", ylabel="||update|| / ||W||", title="Update / weight ratio")
    for ax in (ax_grad, ax_ratio):
        ax.grid(alpha=0.3, which="both")
    plain_legend(ax_ratio, fontsize=7)
    save_figure(fig, out / "gradients.png")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    depth = np.arange(1, len(h["params"]) + 1)
    ax.semilogy(depth, h["grad_norm"].mean(0).clamp_min(1e-30), marker="o")
    ax.set(xlabel="layer (input -> output)", ylabel="mean ||dL/dW||", title="Gradient flow")
    ax.set_xticks(depth)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, out / "gradient_flow.png")
    update_json(out / "diagnostics.json", "gradients", stats.summary())
