"""A run directory's safety: one writer at a time (an flock), no silent overwrite, and a resume that
changes only what it may. The pipeline itself is trainlab/run.py."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from pathlib import Path

from trainlab.config import Config, flatten
from trainlab.errors import ConfigError, TrainlabError
from trainlab.io import read_json
from trainlab.training.checkpoint import check_checkpoint_model, config_from, load_checkpoint

RUN_OUTPUTS = ("config.json", "metrics.csv", "steps.csv", "checkpoints", "model.safetensors",
               "summary.json", "curves.png", "confusion.png", "report.html", "diagnostics",
               "tensorboard", "reliability.png", "snapshots", "ensemble.json", "members")  # fmt: skip
LOCK_FILE = ".trainlab.lock"
# What a resume may change: nothing that the steps trained so far depend on. More epochs recompute the
# schedule for the new total from the step reached, so the run is not the same as a fresh longer one.
RESUMABLE = ("train.epochs", "train.threads", "train.checkpoint_every", "train.checkpoint_steps")


@contextlib.contextmanager
def locked_run_dir(run_dir: Path):
    """Create run_dir and hold an exclusive flock on its LOCK_FILE inside the block. The kernel drops the
    lock when the process ends, however it ends, so a killed run never leaves a stale lock behind."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainlabError(f"{run_dir}: not a directory (expected a run directory)")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainlabError(
                f"{run_dir}: another process is training into this run directory (it holds {LOCK_FILE})"
            ) from None
        yield  # closing the file releases the lock


def clear_for_new_run(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory holding a run's outputs, or with `overwrite` delete them (only a run's: a
    directory without config.json is not a run, and is never emptied)."""
    paths = [run_dir / name for name in RUN_OUTPUTS]
    found = [p.name for p in paths if p.is_symlink() or p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if not found:
        return
    if not overwrite:
        raise TrainlabError(
            f"{run_dir}: holds a run already ({', '.join(found)}); replace it with --overwrite, "
            f"or continue it with --resume {run_dir}"
        )
    if "config.json" not in found:
        raise TrainlabError(
            f"{run_dir}: holds {', '.join(found)} but no config.json: not a run, not overwritten"
        )
    for path in paths:  # the old model and summary must not outlive the new run's config
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.name in found:
            path.unlink()


def resume_point(run_dir: Path, cfg: Config) -> tuple[tuple[dict, dict] | None, list[str]]:
    """(the last checkpoint, or None to start from step 0, notes) after checking what `cfg` changes in
    the run's config.json: only RESUMABLE keys, and never fewer epochs than the run has begun."""
    saved = config_from(read_json(run_dir / "config.json"), run_dir / "config.json")
    last = run_dir / "checkpoints" / "last.safetensors"
    checkpoint, notes = None, []
    if last.exists():
        checkpoint = load_checkpoint(last)
        check_checkpoint_model(saved, checkpoint[1], last)
    elif (run_dir / "model.safetensors").exists():
        raise TrainlabError(
            f"{last}: checkpoint not found, but the run has a model.safetensors; not resumable"
        )
    else:
        notes.append(f"{run_dir}: no checkpoint yet (stopped before the first one); training from step 0")
    meta = checkpoint[1] if checkpoint else {"epoch": 0, "progress": None}
    before, after = (dict(flatten(json.loads(json.dumps(c.to_dict())))) for c in (saved, cfg))
    changed = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = ", ".join(f"{k}={after.get(k)!r} (the run has {before.get(k)!r})" for k in refused)
        raise ConfigError(
            f"{shown}: a resume can change only {', '.join(RESUMABLE)}; start a new run instead"
        )
    begun = meta["epoch"] + (meta["progress"] is not None)  # an epoch in flight has begun
    if cfg.train.epochs < begun:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs}: the run in {run_dir} has begun {begun} epochs; "
            f"expected {begun} or more"
        )
    if changed:
        shown = ", ".join(f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in changed)
        notes.append(f"resumed with {shown} (recorded in {run_dir / 'config.json'})")
    return checkpoint, notes
