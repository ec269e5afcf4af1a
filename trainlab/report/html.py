"""report.html: one run, laid out for a person to read. The final metrics as a vertical table with
units; the training loss and learning rate of every step; accuracy per class and the confusion matrix;
the most confident mistakes and a random sample of test predictions; the augmentation; the diagnostics
figures when they are on; for a convolutional model the first layer's filters and one image's
activation maps at each stage; the environment; the config. Self-contained: every figure is an inline
base64 PNG and the page loads nothing, so it opens from file:// and can be mailed or archived alone."""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.inference import Predictor
from trainlab.io import atomic_write_text
from trainlab.report.calibration import run_reliability_png
from trainlab.report.environment import environment
from trainlab.report.figures import confusion_figure, curves_figure, save_figure, steps_figure
from trainlab.report.filters import activations_figure, filters_figure, first_conv_weight, stage_activations
from trainlab.report.gallery import (
    augmentation_preview,
    confident_mistakes,
    data_uri,
    gallery_html,
    predictions,
    random_predictions,
)
from trainlab.tasks.classification import per_class_scores

GALLERY = 16  # thumbnails per gallery
DIAGNOSTICS = ("activations.png", "activation_histograms.png", "gradients.png", "gradient_flow.png")
RUN_KEYS = ("dataset", "model", "task", "seed", "epochs_run", "num_parameters")
ENVIRONMENT_KEYS = ("device", "torch_version")

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 10px}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.unit{color:#666}pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.card{margin:0;width:112px;font-size:11px;text-align:center}
.card img{width:84px;height:84px;image-rendering:pixelated;border:3px solid #2a2}
.card.wrong img{border-color:#d22}.note{color:#666}code{background:#f3f3f3;padding:0 .2em}"""


@dataclass
class ReportInputs:
    """What the report draws beyond the run directory's files; each part is optional."""

    predictor: Predictor | None = None  # the evaluated model and its preprocessing
    test_images: Any = None  # uint8 (N, C, H, W), or FileImages, in test-split order
    test_outputs: torch.Tensor | None = None  # the task's outputs on them (logits for a classifier)
    test_targets: torch.Tensor | None = None
    train_images: torch.Tensor | None = None  # a few uint8 training images for the augmentation row


def write_report(
    run_dir: Path,
    config: dict,
    history: list[dict],
    summary: dict,
    classes: list[str],
    inputs: ReportInputs | None = None,
) -> Path:
    """Write curves.png, report.html and, when the task reports one, confusion.png into run_dir; the
    per-step curves come from run_dir/steps.csv, the diagnostics from run_dir/diagnostics/."""
    run_dir, inputs = Path(run_dir), inputs or ReportInputs()
    title = f"{summary.get('model', config.get('model', {}).get('name', 'model'))} on " + str(
        summary.get("dataset", config.get("data", {}).get("dataset", "data"))
    )
    parts = [
        f"<h1>trainlab run: {html.escape(title)}</h1><p class='note'>{html.escape(str(run_dir))}</p>",
        "<h2>Results</h2>" + metrics_table(summary),
        "<h2>Training</h2>" + curves_section(run_dir, history),
        per_class_section(summary, classes, run_dir),
        calibration_section(inputs, summary, run_dir),
        gallery_section(inputs, classes, summary),
        augmentation_section(inputs, config, classes),
        diagnostics_section(run_dir),
        convolution_section(inputs),
        "<h2>Per epoch</h2>" + table(history),
        "<h2>Environment</h2>" + pairs_table(environment(summary), "environment"),
        f"<h2>Config</h2><details><summary>the resolved config</summary>"
        f"<pre>{html.escape(json.dumps(config, indent=2))}</pre></details>",
    ]
    body = "\n".join(p for p in parts if p)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>trainlab run: {html.escape(title)}</title><style>{STYLE}</style></head><body>
{body}
</body></html>"""
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path


def image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(png)}">'


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='num'>{html.escape(fmt(row.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metric_cells(key: str, value: Any) -> tuple[str, str]:
    """(value as shown, unit) of one summary entry: accuracies in percent, times in seconds."""
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a", ""
    if key.endswith("accuracy"):
        return f"{100 * value:.2f}", "%"
    if key.endswith("_seconds"):
        return f"{value:.2f}", "s"
    if key == "num_parameters":
        return f"{value:,}", "parameters"
    if key == "epochs_run":
        return str(value), "epochs"
    if "loss" in key:
        return f"{value:.4f}", "mean per example"
    return fmt(value), ""


def metrics_table(summary: dict) -> str:
    """One row per summary entry, grouped: results, then the run, then the times."""
    scalars = {
        k: v for k, v in summary.items() if not isinstance(v, (list, dict)) and k not in ENVIRONMENT_KEYS
    }
    times = [k for k in scalars if k.endswith("_seconds")]
    run = [k for k in RUN_KEYS if k in scalars]
    results = [k for k in scalars if k not in times and k not in run]
    rows = []
    for group, keys in (("results", results), ("run", run), ("time", times)):
        rows.append(f"<tr><th colspan='3'>{group}</th></tr>")
        for key in keys:
            shown, unit = metric_cells(key, scalars[key])
            rows.append(
                f"<tr data-key='{html.escape(key)}'><td>{html.escape(key.replace('_', ' '))}</td>"
                f"<td class='num'>{html.escape(shown)}</td><td class='unit'>{unit}</td></tr>"
            )
    return f"<table id='metrics'><tr><th>metric</th><th>value</th><th>unit</th></tr>{''.join(rows)}</table>"


def pairs_table(rows: list[tuple[str, str]], table_id: str) -> str:
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>" for k, v in rows
    )
    return f"<table id='{table_id}'>{body}</table>"


def read_steps(path: Path) -> list[dict[str, float]]:
    """steps.csv (trainlab.training.callbacks.StepLogger) as rows of floats; [] when absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def curves_section(run_dir: Path, history: list[dict]) -> str:
    steps = read_steps(run_dir / "steps.csv")
    parts = (
        [image_tag(save_figure(steps_figure(steps)), "training loss and learning rate per step")]
        if steps
        else []
    )
    if history:
        parts.append(
            image_tag(save_figure(curves_figure(history), run_dir / "curves.png"), "training curves")
        )
    return "".join(parts) or "<p>(no epochs)</p>"


def calibration_section(inputs: ReportInputs, summary: dict, run_dir: Path) -> str:
    """A classifier's reliability diagram (docs/calibration.md), also written as reliability.png."""
    if "test_ece" not in summary or inputs.test_outputs is None or inputs.test_targets is None:
        return ""
    temperature, path = summary.get("temperature"), run_dir / "reliability.png"
    png = run_reliability_png(inputs.test_outputs, inputs.test_targets, temperature, path)
    note = f"<p class='note'>ECE (15 bins) {100 * summary['test_ece']:.2f}%"
    if temperature:
        note += f", {100 * summary['test_ece_ts']:.2f}% at temperature {temperature:.3f} (fit on validation)"
    note += ".</p>"
    return "<h2>Calibration</h2>" + note + image_tag(png, "reliability diagram")


def per_class_section(summary: dict, classes: list[str], run_dir: Path) -> str:
    """Accuracy per class (the recall of its row of the confusion matrix), precision, F1, support."""
    if "confusion_matrix" not in summary:  # what a classification task reports
        return ""
    confusion = summary["confusion_matrix"]
    scores = per_class_scores(torch.tensor(confusion))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{100 * r:.2f}</td>"
        f"<td class='num'>{100 * p:.2f}</td><td class='num'>{100 * f:.2f}</td>"
        f"<td class='num'>{sum(row)}</td></tr>"
        for name, r, p, f, row in zip(classes, scores["recall"], scores["precision"], scores["f1"], confusion)
    )
    head = "<tr><th>class</th><th>accuracy (%)</th><th>precision (%)</th><th>F1 (%)</th>"
    head += "<th>test images</th></tr>"
    figure = image_tag(
        save_figure(confusion_figure(confusion, classes), run_dir / "confusion.png"), "confusion matrix"
    )
    return f"<h2>Per class</h2><table id='per-class'>{head}{rows}</table><h3>Confusion matrix</h3>{figure}"


def gallery_section(inputs: ReportInputs, classes: list[str], summary: dict) -> str:
    outputs, targets, images = inputs.test_outputs, inputs.test_targets, inputs.test_images
    if outputs is None or targets is None or images is None or outputs.ndim != 2 or targets.ndim != 1:
        return ""  # only a classifier's (N, K) outputs against (N,) labels have a predicted class
    preds = predictions(outputs, targets)
    seed = int(summary.get("seed", 0))
    mistakes = gallery_html(confident_mistakes(preds, GALLERY), images, classes)
    sample = gallery_html(random_predictions(preds, GALLERY, seed), images, classes)
    return (
        "<h2>Test predictions</h2><p class='note'>p: the predicted class's probability (softmax). "
        "Green border: right, red: wrong.</p>"
        f"<h3>Most confident mistakes</h3><div id='mistakes'>{mistakes}</div>"
        f"<h3>Random test images</h3><div id='random'>{sample}</div>"
    )


def augmentation_section(inputs: ReportInputs, config: dict, classes: list[str]) -> str:
    spec = str(config.get("data", {}).get("augment", "") or "").strip()
    if not spec or inputs.train_images is None:
        return ""
    seed = int(config.get("train", {}).get("seed", 0))
    png = augmentation_preview(inputs.train_images, spec, seed, len(classes))
    return (
        "<h2>Augmentation</h2><p>Each row: a training image, then 8 draws of "
        f"<code>{html.escape(spec)}</code>.</p>{image_tag(png, 'augmentation preview')}"
    )


def diagnostics_section(run_dir: Path) -> str:
    found = [
        run_dir / "diagnostics" / name for name in DIAGNOSTICS if (run_dir / "diagnostics" / name).is_file()
    ]
    if not found:
        return ""
    return "<h2>Diagnostics</h2>" + "".join(
        image_tag(p.read_bytes(), p.stem.replace("_", " ")) for p in found
    )


def convolution_section(inputs: ReportInputs) -> str:
    """The first layer's filters and the activation maps of the first test image, for a model with a
    convolution on image inputs."""
    predictor, images = inputs.predictor, inputs.test_images
    weight = first_conv_weight(predictor.model) if predictor is not None else None
    if weight is None or images is None or len(images) == 0:
        return ""
    image = images[torch.tensor([0])]  # (1, C, H, W) uint8
    device = next(predictor.model.parameters()).device
    x = predictor.inputs(image.to(device))
    if x.ndim != 4:
        return ""
    stages = stage_activations(predictor.model, x)
    filters = image_tag(save_figure(filters_figure(weight)), "first layer filters")
    maps = image_tag(save_figure(activations_figure(image[0], stages)), "activation maps")
    return (
        f"<h2>Convolutions</h2><h3>First layer filters</h3>{filters}"
        f"<h3>Activation maps of test image 0</h3><p class='note'>each stage's output "
        f"(channels x height x width), up to 16 channels</p>{maps}"
    )
