"""`trainlab compare RUN... --out compare.html`: finished runs side by side in one self-contained page.

What the page holds, in order:
- the config keys whose values differ between the runs (and only those), one column per run;
- the training curves of every run overlaid, from each run's metrics.csv; runs whose configs differ only
  in `train.seed` form a group, drawn as the mean with a mean ± std band (sample std, n - 1);
- the final metrics (summary.json) with 95% confidence intervals. For a group of n seeds: the mean and
  the Student t interval mean ± t(0.975, n - 1) · s / sqrt(n), which measures the spread over seeds
  (airbench reports its accuracy this way). For one run's test accuracy: the Wilson score interval from
  the test set size n (the confusion matrix's total), which measures the test set's sampling error only
  (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal approximation p ± z·sqrt(p(1-p)/n));
- the confusion matrices side by side.

The figures are base64 PNG inside the page: it opens from file:// with no network, and stays small
(10 runs: a few hundred kB).
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.config import flatten
from trainlab.errors import TrainlabError
from trainlab.io import atomic_write_text, read_json
from trainlab.report.figures import confusion_figure, overlaid_curves_figure, save_figure
from trainlab.report.html import image_tag
from trainlab.training.checkpoint import parse_meta, read_safetensors, trainlab_metadata

SEED_KEY = "train.seed"
CONFIDENCE = 0.95
STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}img{max-width:100%}
.side{display:flex;flex-wrap:wrap;gap:8px}.side img{width:340px}p.note{color:#555;font-size:90%}"""


@dataclass
class FinishedRun:
    """What the page needs from one run directory."""

    path: Path
    label: str
    config: dict[str, Any]  # flattened: {"optim.lr": 0.1, ...}
    history: list[dict[str, float]]  # metrics.csv, one row per epoch
    summary: dict[str, Any]
    classes: list[str] | None  # None when the model file records none


def load_finished_run(path: Path, label: str) -> FinishedRun:
    """A run directory that has finished: summary.json, written last, marks it so."""
    if not path.is_dir():
        raise TrainlabError(f"{path}: not a directory (expected a finished run directory)")
    if not (path / "config.json").is_file():
        raise TrainlabError(f"{path}: no config.json, so not a run directory")
    if not (path / "summary.json").is_file():
        raise TrainlabError(
            f"{path}: not a finished run (no summary.json, which a run writes last, when it has finished)"
        )
    config = dict(flatten(read_json(path / "config.json")))
    summary = read_json(path / "summary.json")
    return FinishedRun(path, label, config, read_metrics(path / "metrics.csv"), summary, read_classes(path))


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv as CSVLogger writes it: a header, then one row of numbers per epoch (empty: not logged)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise TrainlabError(f"{path}: not found (a finished run logs one row per epoch there)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TrainlabError(f"{path}: not a readable CSV file ({e})") from None
    try:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in rows]
    except (TypeError, ValueError) as e:
        raise TrainlabError(f"{path}: a cell is not a number ({e})") from None


def read_classes(path: Path) -> list[str] | None:
    """The class names model.safetensors records in its header (the tensors are not read)."""
    model = path / "model.safetensors"
    if not model.is_file():
        return None
    metadata, _ = read_safetensors(model, with_tensors=False)
    classes = parse_meta(trainlab_metadata(metadata, model), model).get("classes")
    return classes if isinstance(classes, list) else None


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's folder name, or the path as given when two runs share a folder name."""
    names = [p.name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def load_runs(paths: list[Path | str]) -> list[FinishedRun]:
    """The runs, checked to be comparable: at least two, each given once, all on one dataset, and with the
    same class names when their confusion matrices are set side by side."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        given = f" ({paths[0]})" if paths else ""
        raise TrainlabError(f"compare needs at least 2 run directories, got {len(paths)}{given}")
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            raise TrainlabError(f"{p}: given twice (expected each run once)")
        seen.add(p.resolve())
    runs = [load_finished_run(p, label) for p, label in zip(paths, run_labels(paths))]
    first = runs[0]
    for run in runs[1:]:
        for key in ("dataset", "task"):
            if run.summary.get(key) != first.summary.get(key):
                raise TrainlabError(
                    f"{run.path}: {key} {run.summary.get(key)!r} differs from {first.path}'s "
                    f"{first.summary.get(key)!r} (expected runs of one {key})"
                )
        if "confusion_matrix" in first.summary and run.classes != first.classes:
            raise TrainlabError(
                f"{run.path}: classes {run.classes} differ from {first.path}'s {first.classes}, so their "
                "confusion matrices cannot be set side by side"
            )
    return runs


def differing_keys(runs: list[FinishedRun]) -> list[str]:
    """The config keys whose value is not the same in every run (a key one run lacks differs too)."""
    keys = dict.fromkeys(k for run in runs for k in run.config)
    missing = object()
    return [k for k in keys if len({json.dumps(r.config.get(k, missing), default=repr) for r in runs}) > 1]


def seed_groups(runs: list[FinishedRun]) -> list[list[FinishedRun]]:
    """Runs whose configs are equal but for train.seed, in order of first appearance."""
    groups: dict[str, list[FinishedRun]] = {}
    for run in runs:
        rest = {k: v for k, v in run.config.items() if k != SEED_KEY}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=repr), []).append(run)
    return list(groups.values())


def group_label(group: list[FinishedRun], shown: list[str]) -> str:
    """A single run's label; a group's values of the differing keys other than the seed, and its seeds."""
    if len(group) == 1:
        return group[0].label
    values = ", ".join(f"{k}={json.dumps(group[0].config.get(k))}" for k in shown if k != SEED_KEY)
    seeds = ", ".join(str(r.config.get(SEED_KEY)) for r in group)
    return f"{values or 'all runs'} (seeds {seeds})"


def t_quantile(p: float, df: int) -> float:
    """The p quantile (p > 0.5) of Student's t with integer df, by bisection on its exact CDF."""
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t), t >= 0, by Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df): finite sums in
    cos(theta), theta = atan(t / sqrt(df)), which give A = P(|T| <= t) exactly for an integer df."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term, total = math.cos(theta), 0.0
        for k in range(1, (df - 1) // 2 + 1):  # cos, (2/3) cos^3, (2·4)/(3·5) cos^5, ...
            total += term
            term *= c2 * 2 * k / (2 * k + 1)
        a = 2 / math.pi * (theta + math.sin(theta) * total)
    else:
        term, total = 1.0, 0.0
        for k in range(1, df // 2 + 1):  # 1, (1/2) cos^2, (1·3)/(2·4) cos^4, ...
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        a = math.sin(theta) * total
    return (1 + a) / 2


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): mean ± t(1 - alpha/2, n - 1) · s / sqrt(n), s the sample standard deviation."""
    mean = statistics.fmean(values)
    half = (
        t_quantile((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    )
    return mean, mean - half, mean + half


def wilson_interval(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed in n trials:
    (p + z²/2n ± z · sqrt(p(1 - p)/n + z²/4n²)) / (1 + z²/n)."""
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def final_metric_names(runs: list[FinishedRun]) -> list[str]:
    """The summary's test metrics, then its best validation ones (what a run is judged by)."""
    names = dict.fromkeys(k for r in runs for k in r.summary if k.startswith(("test_", "best_val_")))
    return [k for k in names if all(is_number(r.summary.get(k)) or r.summary.get(k) is None for r in runs)]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_set_size(run: FinishedRun) -> int | None:
    matrix = run.summary.get("confusion_matrix")
    return int(sum(map(sum, matrix))) if isinstance(matrix, list) and matrix else None


def metric_cell(group: list[FinishedRun], name: str) -> tuple[str, str]:
    """(value with its interval, how the interval was computed) for one metric of one group."""
    values = [r.summary[name] for r in group if is_number(r.summary.get(name))]
    if not values:
        return "—", ""
    if len(values) > 1:
        mean, low, high = t_interval(values)
        return f"{mean:.4f} [{low:.4f}, {high:.4f}]", f"t, {len(values)} seeds"
    n = test_set_size(group[0])
    if len(group) == 1 and name.startswith("test_") and name.endswith("accuracy") and n:
        low, high = wilson_interval(values[0], n)
        return f"{values[0]:.4f} [{low:.4f}, {high:.4f}]", f"Wilson, {n} test images"
    return f"{values[0]:.4f}", "none (one run)" if len(group) == 1 else "none (one value)"


def group_curves(group: list[FinishedRun], label: str) -> dict[str, Any]:
    """A group's curves per epoch: the mean over its runs and, for two runs or more, the sample std."""
    epochs = sorted({int(h["epoch"]) for r in group for h in r.history if "epoch" in h})
    keys = [
        k
        for k in dict.fromkeys(k for r in group for h in r.history for k in h)
        if k.startswith(("train_", "val_"))
    ]
    values, spread = {}, {}
    for key in keys:
        at = [[h[key] for r in group for h in r.history if h.get("epoch") == e and key in h] for e in epochs]
        values[key] = [statistics.fmean(v) if v else math.nan for v in at]
        if len(group) > 1:
            spread[key] = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in at]
    return {"label": label, "epochs": epochs, "values": values, "spread": spread}


def diff_table(runs: list[FinishedRun], keys: list[str]) -> str:
    if not keys:
        return "<p>The runs' configs are identical.</p>"
    head = "<tr><th>key</th>" + "".join(f"<th>{html.escape(r.label)}</th>" for r in runs) + "</tr>"
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th>"
        + "".join(f"<td>{html.escape(json.dumps(r.config[k]) if k in r.config else '—')}</td>" for r in runs)
        + "</tr>"
        for k in keys
    )
    return f'<table id="config-diff">{head}{rows}</table>'


def metrics_table(groups: list[list[FinishedRun]], labels: list[str], names: list[str]) -> str:
    head = (
        "<tr><th>runs</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>interval</th></tr>"
    )
    rows = []
    for group, label in zip(groups, labels):
        cells = [metric_cell(group, n) for n in names]
        how = interval_note(names, [h for _, h in cells])
        rows.append(
            f"<tr><th>{html.escape(label)}</th>"
            + "".join(f'<td class="num">{html.escape(v)}</td>' for v, _ in cells)
            + f"<td>{html.escape(how)}</td></tr>"
        )
    return f'<table id="final-metrics">{head}{"".join(rows)}</table>'


def interval_note(names: list[str], methods: list[str]) -> str:
    """How a row's intervals were computed: one method for all of them, or a method per metric."""
    used = [(n, m) for n, m in zip(names, methods) if m]
    if len({m for _, m in used}) == 1:
        return used[0][1]
    return "; ".join(f"{n}: {m}" for n, m in used)


def confusion_images(runs: list[FinishedRun]) -> str:
    tags = []
    for run in runs:
        matrix = run.summary.get("confusion_matrix")
        if not isinstance(matrix, list):
            continue
        classes = run.classes or [str(i) for i in range(len(matrix))]
        fig = confusion_figure(matrix, classes)
        fig.axes[0].set_title(run.label, fontsize=16, fontweight="bold")  # readable at the page's width
        tags.append(image_tag(save_figure(fig), f"confusion matrix of {html.escape(run.label)}"))
    return f'<div class="side">{"".join(tags)}</div>' if tags else "<p>(no confusion matrices)</p>"


def compare_runs(paths: list[Path | str], out: Path | str) -> Path:
    """Write the comparison page of the finished runs in `paths` to `out`; returns its path."""
    runs = load_runs(paths)
    keys = differing_keys(runs)
    groups = seed_groups(runs)
    labels = [group_label(g, keys) for g in groups]
    curves = [group_curves(g, label) for g, label in zip(groups, labels)]
    has_curves = any(c["epochs"] for c in curves)
    figure = image_tag(save_figure(overlaid_curves_figure(curves)), "training curves") if has_curves else ""
    grouped = [label for g, label in zip(groups, labels) if len(g) > 1]
    names = final_metric_names(runs)
    listed = "".join(f"<li>{html.escape(r.label)}: {html.escape(str(r.path))}</li>" for r in runs)
    title = f"trainlab compare: {len(runs)} runs"
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body><h1>{title}</h1><ul>{listed}</ul>
<h2>Config differences</h2>{diff_table(runs, keys)}
<h2>Curves</h2>
<p class="note">Seed groups (configs equal but for {SEED_KEY}): {html.escape("; ".join(grouped) or "none")}.
A group is drawn as its mean, with a band of ± one sample standard deviation over its seeds.</p>
{figure or "<p>(no epochs logged)</p>"}
<h2>Final metrics</h2>{metrics_table(groups, labels, names)}
<p class="note">[low, high]: a {CONFIDENCE:.0%} confidence interval. For a seed group, Student's t interval of
the mean over its seeds (the spread between seeds, not the test set's sampling error). For one run's test
accuracy, the Wilson score interval from the test set size (the test set's sampling error only).</p>
<h2>Confusion matrices (test set)</h2>{confusion_images(runs)}
</body></html>"""
    out = Path(out)
    atomic_write_text(out, body)
    return out
