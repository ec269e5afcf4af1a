"""A whole run, as the lecture orders it: dataset -> preprocess -> augment -> model -> trainer ->
evaluate -> report. `train(cfg, out)` is what `trainlab train` calls.

Run directory:
    config.json            the fully resolved config
    metrics.csv            one row per epoch
    checkpoints/           last.safetensors (resume point), best.safetensors
    model.safetensors      the evaluated weights + preprocessing + class names, for eval / predict
    summary.json           test accuracy and loss, best validation accuracy, timing, device, versions
    curves.png, report.html
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config import Config
from trainlab.data.augment import Augment
from trainlab.data.datasets import load_dataset
from trainlab.data.preprocess import Standardizer
from trainlab.data.splits import make_loaders
from trainlab.device import device_name, resolve_device, synchronize
from trainlab.errors import ConfigError, TrainlabError
from trainlab.inference import evaluate_split
from trainlab.io import atomic_write_text
from trainlab.models import model_from_config
from trainlab.models.factory import require_vector_input
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.tasks import task_from_config
from trainlab.training.callbacks import Callback, Checkpointer, CSVLogger, EarlyStopping, ProgressBar
from trainlab.training.checkpoint import load_checkpoint, prefixed, save_checkpoint
from trainlab.training.optim import create_optimizer, create_schedule
from trainlab.training.trainer import Trainer


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, float]]
    model: torch.nn.Module
    run_dir: Path | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def create_penalty_from(cfg: Config):
    if cfg.penalty.name == "none":
        return None
    from trainlab.nn.regularize import create_penalty

    return create_penalty(cfg.penalty.name, cfg.penalty.strength, **cfg.penalty.options)


def check_preprocessing_fits_model(standardizer: Standardizer, cfg: Config) -> None:
    """Checked before the fit. The pca modes give (N, k) feature vectors: only a model that takes vectors
    can train on them, and test-time augmentation, which mirrors the model's input, has no image to mirror."""
    if standardizer.keeps_shape:
        return
    why = f"data.preprocess={cfg.data.preprocess!r} returns (N, k) feature vectors, not images"
    require_vector_input(cfg.model.name, why)
    if cfg.train.tta:
        raise ConfigError(f"train.tta mirrors the model's input, but {why}; set train.tta=false")


def train(
    cfg: Config,
    out: Path | str | None = None,
    *,
    resume: bool = False,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one configuration. With `out`, everything is written to that run directory;
    with `resume`, training continues from out/checkpoints/last.safetensors (mid-epoch too)."""
    started = time.perf_counter()
    run_dir = Path(out) if out is not None else None
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    clock = Stopwatch(device)
    task = task_from_config(cfg)

    with clock("load"):
        data = load_dataset(cfg.data.dataset, cfg.data.memory_budget_mb)
        loaders = make_loaders(data, cfg, device)
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    check_preprocessing_fits_model(standardizer, cfg)
    with clock("init"):  # the clock of the speed goals starts here, at the preprocessing fit
        standardizer.fit(loaders.fit_images)
    # built for the fitted transform's output: the images, or the k components of a pca mode
    model = model_from_config(cfg, standardizer.output_shape(data.image_shape), data.num_classes).to(device)
    if cfg.model.init and INITIALIZERS.meta(cfg.model.init).get("needs_data"):
        with clock("init"):  # a data-dependent initialisation (LSUV) is on the same clock
            batch = standardizer(loaders.fit_images[: cfg.data.batch_size])
            init_model(model, cfg.model.init, batch=batch, **cfg.model.init_options)
    augment = Augment(cfg.data.augment, seed=cfg.train.seed, num_classes=data.num_classes, device=str(device))
    if len(loaders.train) == 0:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training split")

    meta = {"config": cfg.to_dict(), "classes": data.classes, "image_shape": list(data.image_shape)}
    fixed_tensors = prefixed("preprocess", standardizer.state_dict())
    run_callbacks = [ProgressBar(progress), *callbacks]
    if cfg.train.early_stopping:
        run_callbacks.append(
            EarlyStopping(cfg.train.early_stopping, cfg.train.min_delta, restore_best=cfg.train.restore_best)
        )
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
        run_callbacks += [
            CSVLogger(run_dir / "metrics.csv"),
            Checkpointer(
                run_dir / "checkpoints",
                fixed_tensors,
                meta,
                every=cfg.train.checkpoint_every,
                steps=cfg.train.checkpoint_steps,
            ),  # fmt: skip
        ]
    if cfg.train.diagnose:
        from trainlab.diagnose import diagnostic_callbacks

        run_callbacks += diagnostic_callbacks(run_dir)

    trainer = Trainer(
        model,
        create_optimizer(model, cfg.optim),
        epochs=cfg.train.epochs,
        task=task,
        schedule=create_schedule(cfg.schedule, cfg.train.epochs),
        transform=standardizer,
        augment=augment if augment else None,
        penalty=create_penalty_from(cfg),
        grad_clip=cfg.train.grad_clip,
        ema_decay=cfg.train.ema,
        tta=cfg.train.tta,
        callbacks=run_callbacks,
        stateful={"loader": loaders.train, "augment": augment},
        compile=cfg.train.compile,
        precision=cfg.train.precision,
        channels_last=cfg.train.channels_last,
        device=device,
    )
    if resume:
        if run_dir is None:
            raise TrainlabError("resume needs the run directory")
        trainer.load_state(*load_checkpoint(run_dir / "checkpoints" / "last.safetensors"))
    if cfg.train.compile:
        with clock("compile"):  # one-off: compiled before the epochs' clock runs, then undone exactly
            batch = cfg.data.batch_size  # a streamed folder's fit sample may hold fewer images: tile it
            tiles = -(-batch // len(loaders.fit_images))
            images = loaders.fit_images[:batch].repeat(tiles, 1, 1, 1)[:batch]
            trainer.warm_up(images, loaders.fit_targets[:batch].repeat(tiles)[:batch])
    setup_seconds = time.perf_counter() - started

    with clock("fit"):
        history = trainer.fit(loaders.train, loaders.val)
    with clock("eval"):
        final = evaluate_split(trainer.predictor(), loaders.test, data.classes)
    monitor, best = f"val_{task.monitor}", max if task.higher_is_better else min
    summary = {
        **{k: v for k, v in final.items() if not isinstance(v, list)},
        f"best_{monitor}": best((h[monitor] for h in history if monitor in h), default=float("nan")),
        "epochs_run": trainer.epoch,
        **timing_summary(clock, history, setup_seconds, started),
        "device": device_name(device),
        "torch_version": torch.__version__,
        "seed": cfg.train.seed,
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "task": task.name,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if run_dir is not None:
        reported = {k: v for k, v in final.items() if k == "confusion_matrix"}
        write_outputs(run_dir, trainer, {**summary, **reported}, meta, fixed_tensors)
    return RunResult(summary, history, trainer.eval_model, run_dir)


class Stopwatch:
    """Wall-clock seconds of a run's phases. On CUDA each boundary waits for the device, so the GPU
    work a phase queued is charged to that phase.

        clock = Stopwatch(device)
        with clock("fit"):
            ...
        clock.seconds["fit"]
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def timing_summary(clock: Stopwatch, history: list[dict], setup_seconds: float, started: float) -> dict:
    """The run's times, in seconds. `time_to_result_seconds` is the speed goals' measure: from the
    first touch of the weights (preprocessing fit and initialisation) to the end of the final test
    evaluation (TTA included), all epochs, validation and checkpoints in between; it excludes loading
    the data and the one-off compile warm-up, which are reported on their own. After a resume, it
    covers this process only; `train_seconds` sums the epochs of every process."""
    phases = clock.seconds
    return {
        "train_seconds": sum(h["seconds"] for h in history),
        "time_to_result_seconds": phases["init"] + phases["fit"] + phases["eval"],
        "load_seconds": phases["load"],
        "compile_seconds": phases.get("compile", 0.0),
        "init_seconds": phases["init"],
        "eval_seconds": phases["eval"],
        "setup_seconds": setup_seconds,
        "total_seconds": time.perf_counter() - started,
    }


def write_outputs(run_dir: Path, trainer: Trainer, summary: dict, meta: dict, fixed_tensors: dict) -> None:
    from trainlab.report.html import write_report

    weights = prefixed("model", trainer.eval_model.state_dict())
    save_checkpoint(run_dir / "model.safetensors", {**weights, **fixed_tensors}, meta)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    write_report(run_dir, meta["config"], trainer.history, summary, meta["classes"])
