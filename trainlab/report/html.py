"""A self-contained report.html for a run: config, final metrics, curves and confusion matrix, with
the figures embedded as base64 PNG so the file can be mailed or archived on its own."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from trainlab.io import atomic_write_text
from trainlab.report.figures import confusion_figure, curves_figure, save_figure

STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:100%}"""


def image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(run_dir: Path, config: dict, history: list[dict], summary: dict, classes: list[str]) -> Path:
    """Write curves.png, report.html and, when the task reports one, confusion.png into run_dir."""
    curves = save_figure(curves_figure(history), run_dir / "curves.png") if history else b""
    confusion = b""
    if "confusion_matrix" in summary:  # what a classification task reports
        confusion = save_figure(
            confusion_figure(summary["confusion_matrix"], classes), run_dir / "confusion.png"
        )
    metrics = {k: v for k, v in summary.items() if not isinstance(v, list)}
    title = html.escape(str(run_dir))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>trainlab run: {title}</title>
<style>{STYLE}</style></head><body>
<h1>trainlab run</h1><p>{title}</p>
<h2>Final metrics</h2>{table([metrics])}
<h2>Curves</h2>{image_tag(curves, "training curves") if curves else "<p>(no epochs)</p>"}
<h2>Per epoch</h2>{table(history)}
{"<h2>Confusion matrix</h2>" + image_tag(confusion, "confusion matrix") if confusion else ""}
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
</body></html>"""
    path = run_dir / "report.html"
    atomic_write_text(path, body)
    return path
