"""Figures for a run: training curves and the confusion matrix (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path | None = None) -> bytes:
    """PNG bytes of `fig`; also written atomically to `path` when given. Closes the figure."""
    from trainlab.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def plain_legend(ax, **kwargs):
    """`ax.legend`, its labels drawn as they are: they can be user strings (layer names), and mathtext
    would parse a `$...$` in one and fail on an unknown macro (then no figure is written at all)."""
    legend = ax.legend(**kwargs)
    for text in legend.get_texts():
        text.set_parse_math(False)
    return legend


def curves_figure(history: list[dict[str, float]]):
    """One panel for the loss and one for each metric the task logs (train_X and val_X)."""
    epochs = [h["epoch"] for h in history]
    logged = dict.fromkeys(k.split("_", 1)[1] for h in history for k in h if k.startswith(("train_", "val_")))
    names = ["loss", *(n for n in logged if n != "loss")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for prefix, label in (("train_", "train"), ("val_", "validation")):
            if any(prefix + name in h for h in history):
                ax.plot(epochs, [h.get(prefix + name) for h in history], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=name, title=name.replace("_", " ").capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(confusion: list[list[int]], classes: list[str]):
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    if len(classes) <= 20:
        # class names are user strings (folder names): drawn as they are, never parsed as mathtext `$...$`
        ax.set_xticks(range(len(classes)), classes, rotation=90, parse_math=False)
        ax.set_yticks(range(len(classes)), classes, parse_math=False)
        peak = max(max(row) for row in confusion) or 1
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                ax.text(
                    j,
                    i,
                    count,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if count > peak / 2 else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    return fig


def overlaid_curves_figure(curves: list[dict]):
    """Several runs' curves on shared panels: one for the loss, one for each metric they log. Each of
    `curves` is {"label", "epochs", "values": {"val_loss": [...], ...}, "spread": {...}}; validation is
    drawn solid and training dashed, in the run's colour, and a curve with a spread (a seed group's std)
    gets a mean ± spread band (an error bar when there is one epoch)."""
    logged = dict.fromkeys(k.split("_", 1)[1] for c in curves for k in c["values"])
    names = ["loss", *(n for n in logged if n != "loss")]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names):
        for i, curve in enumerate(curves):
            colour = colours(i % 10)
            for prefix, style in (("val_", "-"), ("train_", "--")):
                key = prefix + name
                if key not in curve["values"]:
                    continue
                mean = curve["values"][key]
                label = f"{curve['label']} ({prefix.rstrip('_')})"
                ax.plot(curve["epochs"], mean, style, marker="o", markersize=3, color=colour, label=label)
                spread = curve["spread"].get(key)
                if spread and len(mean) == 1:  # a band over one epoch has no width: an error bar shows it
                    ax.errorbar(curve["epochs"], mean, yerr=spread, color=colour, capsize=4, linewidth=1)
                elif spread:
                    low, high = [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)]
                    ax.fill_between(curve["epochs"], low, high, color=colour, alpha=0.2, linewidth=0)
        ax.set(xlabel="epoch", ylabel=name, title=name.replace("_", " ").capitalize())
        epochs = sorted({e for c in curves for e in c["epochs"]})
        if len(epochs) <= 10:  # else matplotlib ticks fractional epochs
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    plain_legend(axes[0][-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def steps_figure(steps: list[dict[str, float]]):
    """The training loss and the learning rate of every optimisation step (steps.csv), epochs marked."""
    x = [s["step"] for s in steps]
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    loss_ax.plot(x, [s["loss"] for s in steps], linewidth=0.8)
    lr_ax.plot(x, [s["lr"] for s in steps], linewidth=1.2, color="tab:orange")
    ends = [a["step"] for a, b in zip(steps, steps[1:]) if a["epoch"] != b["epoch"]]
    for ax, name in ((loss_ax, "training loss"), (lr_ax, "learning rate")):
        for end in ends:
            ax.axvline(end, color="0.8", linewidth=0.8, zorder=0)
        ax.set(xlabel="step", ylabel=name, title=f"{name.capitalize()} per step")
        ax.grid(alpha=0.3)
    return fig
