"""What every experiment shares: the registry entry, the run context, verdicts from measured numbers,
Fashion-MNIST on the device, a small training loop, and atomic results.json / README.md / PNG output.

An experiment is a function `fn(ctx) -> Outcome`, registered with its lecture claim:

    @register_experiment("init", claim="Small random init makes deep tanh activations collapse ...")
    def init_experiment(ctx: Context) -> Outcome: ...

Its verdict is never written by hand: each `Check` compares a measured number with a stated threshold,
and `verdict()` says `supported` (all checks pass), `not supported` (none pass) or `mixed`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.device import device_name, resolve_device
from trainlab.errors import ConfigError
from trainlab.io import atomic_write_json, atomic_write_text
from trainlab.progress import progress_bar
from trainlab.registry import Registry
from trainlab.report.figures import save_figure

EXPERIMENTS = Registry("experiment")


def register_experiment(name: str, *, claim: str, lecture: str) -> Callable:
    return EXPERIMENTS.register(name, claim=claim, lecture=lecture)


@dataclass
class Check:
    """One measured criterion: `passed` is computed from `value` against the threshold in `rule`."""

    name: str
    value: float
    rule: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "rule": self.rule, "passed": bool(self.passed)}


def check(name: str, value: float, rule: str, passed: bool) -> Check:
    return Check(name, round(float(value), 6), rule, bool(passed))


def verdict(checks: list[Check]) -> str:
    passed = sum(c.passed for c in checks)
    return "supported" if passed == len(checks) else "not supported" if passed == 0 else "mixed"


@dataclass
class Outcome:
    measured: dict[str, Any]
    checks: list[Check]
    config: dict[str, Any]
    notes: str = ""  # extra README text: how it was measured, what to read in the figure


@dataclass
class Context:
    """What an experiment needs to know about its run: scale, device, seeds and where figures go."""

    name: str
    quick: bool
    out: Path
    device: torch.device
    seeds: int
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    progress: bool = True  # log lines, and a bar per training run on a terminal (off: --quiet)
    runs: int = 0  # training runs started, for the bars' labels

    def figure(self, filename: str, fig, caption: str) -> None:
        save_figure(fig, self.out / filename)
        self.figures.append((filename, caption))

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[{self.name}] {message}", file=sys.stderr, flush=True)

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


# The experiment in flight: train_classifier is called from every experiment module without its Context,
# and reads from here whether to draw a bar and how to label it.
RUNNING: ContextVar[Context | None] = ContextVar("running_experiment", default=None)


def run_experiment(
    name: str,
    quick: bool = False,
    out: Path | str | None = None,
    device: str | torch.device = "auto",
    seeds: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run experiment `name`, write results.json, README.md and its figures into `out`
    (default experiments/<name>), and return {verdict, out, message, seconds, ...}. With `progress`
    False, nothing is printed (no log lines, no progress bars)."""

    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected a number of seeds >= 1")
    fn = EXPERIMENTS.get(name)
    name = EXPERIMENTS.canonical(name)
    meta = EXPERIMENTS.meta(name)
    out = Path(out) if out is not None else Path("experiments") / name
    out.mkdir(parents=True, exist_ok=True)
    seeds = seeds if seeds is not None else (1 if quick else 3)
    ctx = Context(name, quick, out, resolve_device(str(device)), seeds, progress=progress)
    started = time.perf_counter()
    token = RUNNING.set(ctx)
    try:
        outcome: Outcome = fn(ctx)
    finally:
        RUNNING.reset(token)
    seconds = time.perf_counter() - started
    result = {
        "experiment": name,
        "claim": meta["claim"],
        "lecture": meta["lecture"],
        "verdict": verdict(outcome.checks),
        "checks": [c.to_dict() for c in outcome.checks],
        "measured": outcome.measured,
        "config": {**outcome.config, "quick": quick, "seeds": ctx.seeds},
        "environment": environment(ctx.device, seconds),
        "figures": [f for f, _ in ctx.figures],
        "captions": [c for _, c in ctx.figures],
        "notes": outcome.notes,
        "command": command_line(name, quick, ctx.seeds, out),
    }
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "README.md", readme(result))
    message = f"{name}: {result['verdict']} ({seconds:.1f} s) -> {out}"
    return {"verdict": result["verdict"], "out": str(out), "message": message, "seconds": seconds}


def environment(device: torch.device, seconds: float) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "load_average": round(os.getloadavg()[0], 1),  # > cores: the machine was shared during the run
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
    }


def command_line(name: str, quick: bool, seeds: int, out: Path) -> str:
    command = f"trainlab experiment {name}{' --quick' if quick else ''}"
    if seeds != (1 if quick else 3):
        command += f" --seeds {seeds}"
    if out != Path("experiments") / name:
        command += f" --out {out}"
    return command


def readme(result: dict[str, Any]) -> str:
    """The experiment's README.md, rendered from its results.json alone."""
    env = result["environment"]
    shared = f" (load average {env['load_average']} at the end: shared with other jobs)"
    shared = shared if env["load_average"] > (os.cpu_count() or 1) else ""
    lines = [
        f"# Experiment `{result['experiment']}`",
        "",
        f"**Claim** ({result['lecture']}): {result['claim']}",
        "",
        f"**Verdict: {result['verdict']}** ({sum(c['passed'] for c in result['checks'])} of "
        f"{len(result['checks'])} checks pass)",
        "",
        "| check | measured | rule | passed |",
        "|---|---|---|---|",
        *[
            f"| {cell(c['name'])} | {c['value']:.4g} | {cell(c['rule'])} | {'yes' if c['passed'] else 'no'} |"
            for c in result["checks"]
        ],
        "",
    ]
    if result["notes"]:
        lines += [result["notes"].strip(), ""]
    for filename, caption in zip(result["figures"], result["captions"]):
        lines += [f"![{caption}]({filename})", "", f"*{caption}*", ""]
    lines += [
        "## Measured numbers",
        "",
        *[
            f"- **{key}**: `{json.dumps(rounded(value), default=float)}`"
            for key, value in result["measured"].items()
        ],
        "",
        "Full precision in [results.json](results.json).",
        "",
        "## Reproduce",
        "",
        f"`{result['command']}` on {env['device']}{shared}, torch {env['torch']}, {env['date']}, "
        f"{env['seconds']} s.",
        "",
        f"Configuration: `{json.dumps(result['config'], default=str)}`",
        "",
    ]
    return "\n".join(lines)


def cell(text: str) -> str:
    """Text for a Markdown table cell: a literal | (as in |x|) would end the cell."""
    return text.replace("|", "\\|")


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` with every float rounded to `digits` significant digits, for reading."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


# -- data --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def load_images(dataset: str = "fashion-mnist"):
    from trainlab.data.datasets import load_dataset

    return load_dataset(dataset)


@dataclass
class Split:
    """Float images on the device, preprocessed with statistics fitted on x_train only."""

    x_train: torch.Tensor  # (N, 1, 28, 28)
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    standardizer: Any = None


def fashion_split(
    device: torch.device,
    n_train: int,
    n_val: int,
    seed: int = 0,
    preprocess: str = "channel_mean_std",
    **preprocess_options: Any,
) -> Split:
    """`n_train` training and `n_val` held-out validation images from the Fashion-MNIST training set,
    preprocessed by `Standardizer(preprocess, **preprocess_options)` fitted on the training images."""
    from trainlab.data.datasets import split_train_val
    from trainlab.data.preprocess import Standardizer

    data = load_images()
    train_idx, val_idx = split_train_val(len(data.train_images), 10000, seed)
    train_idx, val_idx = train_idx[:n_train], val_idx[:n_val]
    standardizer = Standardizer(preprocess, **preprocess_options).fit(data.train_images[train_idx])
    prepare = lambda idx: standardizer(data.train_images[idx]).to(device)  # noqa: E731
    return Split(
        prepare(train_idx),
        data.train_labels[train_idx].to(device),
        prepare(val_idx),
        data.train_labels[val_idx].to(device),
        standardizer,
    )


# -- training ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """(loss, accuracy) in eval mode."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def train_classifier(
    model: nn.Module,
    data: Split,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    optimizer: str = "sgd",
    seed: int = 0,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    augment: Callable | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
    on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """Mini-batch training on device tensors. Returns per-epoch train_loss, train_accuracy, val_loss,
    val_accuracy (train metrics are the running means over the epoch's batches), and `diverged`.
    `augment(images, labels) -> (images, targets)` may return soft targets; `on_epoch(epoch, history)` runs
    after each epoch's validation."""
    generator = torch.Generator(device=data.x_train.device).manual_seed(seed)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history: dict[str, list[float]] = {
        k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    }
    n, step = len(data.x_train), 0
    ctx = RUNNING.get()
    if ctx is not None:
        ctx.runs += 1
    label = f"[{ctx.name}] training run {ctx.runs}" if ctx is not None else "training"
    with progress_bar(epochs * (n // batch_size), label, ctx is not None and ctx.progress) as advance:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, device=data.x_train.device, generator=generator)
            loss_sum = torch.zeros((), device=data.x_train.device)
            correct = torch.zeros((), device=data.x_train.device)
            seen = 0
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                x, y = data.x_train[idx], data.y_train[idx]
                targets = y
                if augment is not None:
                    x, targets = augment(x, y)
                logits = model(x)
                loss = F.cross_entropy(logits, targets)
                total = loss + penalty(model) if penalty is not None else loss
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                step += 1
                advance()
                if on_step is not None:
                    on_step(step, model)
            train_loss = float(loss_sum) / max(seen, 1)
            if not torch.isfinite(torch.tensor(train_loss)):
                history["diverged"] = [1.0]
                break
            val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
            history["train_loss"].append(train_loss)
            history["train_accuracy"].append(float(correct) / max(seen, 1))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            if on_epoch is not None:
                on_epoch(epoch, history)
    return history


def mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def pixel_space(augment: Callable, standardizer) -> Callable:
    """Apply `augment` (which expects images in [0, 1]) to standardised images: undo the preprocessing,
    augment, clamp to [0, 1], and preprocess again."""

    def apply(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = augment(standardizer.inverse_transform(x).clamp(0, 1), labels)
        return standardizer.transform(images), targets

    return apply


def write_index(root: Path | str) -> Path:
    """README.md in `root` with one row per experiment folder holding a results.json: verdict, claim,
    first figure, checks passed, device and date."""
    root = Path(root)
    rows, environments = [], []
    for path in sorted(root.glob("*/results.json")):
        r = json.loads(path.read_text())
        environments.append(r["environment"])
        name, env = r["experiment"], r["environment"]
        passed = sum(c["passed"] for c in r["checks"])
        figure = f"![{name}]({name}/{r['figures'][0]})" if r["figures"] else ""
        rows.append(
            f"| [{name}]({name}/README.md) | **{r['verdict']}** ({passed}/{len(r['checks'])}) | {r['claim']} "
            f"| {env['seconds']} s, {env['date']} |"
        )
        if figure:
            rows.append(f"| | | {figure} | |")
    lines = [
        "# Lecture claims, measured",
        "",
        "Each folder holds one experiment's full run: its figures, `results.json` (claim, measured numbers, "
        "checks, verdict, config, environment) and a README. The verdict is computed from the checks: "
        "`supported` when all pass, `not supported` when none does, `mixed` otherwise. Reproduce one with "
        "`trainlab experiment NAME --out docs/experiments/NAME` (add `--quick` for the under-a-minute "
        "version); `trainlab.experiments.common.write_index('docs/experiments')` regenerates this index.",
        "",
        f"Runs on {', '.join(sorted({e['device'] for e in environments}))}, torch "
        f"{', '.join(sorted({e['torch'] for e in environments}))}, "
        f"{min(e['date'] for e in environments)} to {max(e['date'] for e in environments)}; load average "
        f"up to {max(e['load_average'] for e in environments)} on {os.cpu_count()} cores (a shared machine: "
        "timings are indicative only). Each README states its scale (images, epochs, seeds).",
        "",
        "| experiment | verdict (checks passed) | claim | run |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    atomic_write_text(root / "README.md", "\n".join(lines))
    return root / "README.md"
