"""`trainlab.train`: one call for every run. A scenes run (fmnist-scenes, or a localization, detection,
segmentation or instance task) trains in trainlab.vision_run, every other run in trainlab.run; both keep
the same run-directory rules. `trainlab train` calls it too."""

from __future__ import annotations

from pathlib import Path

from trainlab.config import Config
from trainlab.run import RunResult
from trainlab.run import train as train_images
from trainlab.training.callbacks import Callback
from trainlab.vision_run import is_vision_run, train_vision


def train(
    cfg: Config,
    out: Path | str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one configuration (see trainlab.run.train for the run directory's rules)."""
    run = train_vision if is_vision_run(cfg) else train_images
    return run(cfg, out, resume=resume, overwrite=overwrite, callbacks=callbacks, progress=progress)
