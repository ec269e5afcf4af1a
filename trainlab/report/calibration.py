"""The reliability diagram (Guo et al. 2017, figure 1): accuracy against confidence per bin, with the
diagonal of perfect calibration and a histogram of how many samples each bin holds. The numbers come
from trainlab.tasks.calibration."""

from __future__ import annotations

from pathlib import Path

import torch

from trainlab.report.figures import plt, save_figure
from trainlab.tasks.calibration import ECE_BINS, calibration_metrics, reliability_bins


def reliability_figure(
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]], bins: int = ECE_BINS, title: str = ""
):
    """One panel of bars per {label: (probs (N, C), labels (N,))}, side by side (say before and after
    temperature scaling), each titled with its ECE; the bin counts below, on a log scale."""
    fig, axes = plt.subplots(
        2, len(curves), figsize=(4.2 * len(curves), 5.2), squeeze=False, height_ratios=(3, 1), sharex=True
    )
    for column, (label, (probs, labels)) in enumerate(curves.items()):
        table = reliability_bins(probs, labels, bins)
        ece = calibration_metrics(probs, labels, bins)["ece"]
        edges, width = table["edges"][:-1], 1.0 / bins
        top, bottom = axes[0][column], axes[1][column]
        filled = [c > 0 for c in table["counts"]]
        accuracy = [a if f else 0.0 for a, f in zip(table["accuracy"], filled)]
        top.bar(edges, accuracy, width=width, align="edge", color="#4477aa", edgecolor="k", label="accuracy")
        gaps = [c - a if f else 0.0 for a, c, f in zip(table["accuracy"], table["confidence"], filled)]
        # from the accuracy to the mean confidence: above the bar when over-confident, inside it when under
        top.bar(edges, gaps, bottom=accuracy, width=width, align="edge", facecolor="none", hatch="///",
                edgecolor="#cc3344", label="gap to the mean confidence")  # fmt: skip
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{label}: ECE {100 * ece:.2f}%")
        top.title.set_parse_math(False)
        top.legend(loc="upper left", fontsize=8)
        shown = [(e, c) for e, c in zip(edges, table["counts"]) if c > 0]  # a log axis has no 0
        bottom.bar([e for e, _ in shown], [c for _, c in shown], width=width, align="edge", color="#999")
        bottom.set(yscale="log", xlabel="confidence (max probability)", ylabel="samples")
    if title:
        fig.suptitle(title).set_parse_math(False)
    return fig


def write_reliability_diagram(
    probs: torch.Tensor, labels: torch.Tensor, path: Path | str, bins: int = ECE_BINS, title: str = ""
) -> Path:
    """reliability_figure of one set of predictions, written atomically as a PNG at `path`."""
    path = Path(path)
    save_figure(reliability_figure({"predictions": (probs, labels)}, bins, title), path)
    return path


def run_reliability_png(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float | None, path: Path | None = None
) -> bytes:
    """A run's reliability diagram: its test predictions, and beside them the same predictions scaled
    by the fitted temperature when there is one. PNG bytes; also written to `path` when given."""
    logits = logits.detach().double().cpu()
    curves = {"test": (logits.softmax(1), labels)}
    if temperature is not None:
        curves[f"test, temperature {temperature:.3f}"] = ((logits / temperature).softmax(1), labels)
    return save_figure(reliability_figure(curves), path)
