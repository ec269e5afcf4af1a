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
import os
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config import Config
from trainlab.data.augment import Augment
from trainlab.data.datasets import ImageDataset, load_dataset, split_train_val
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import PREPROCESSING_MODES, Standardizer
from trainlab.data.stream import StreamLoader
from trainlab.errors import ConfigError, TrainlabError
from trainlab.models import create_model
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.train.callbacks import Callback, Checkpointer, CSVLogger, EarlyStopping, ProgressBar
from trainlab.train.checkpoint import atomic_write_text, load_checkpoint, prefixed, save_checkpoint
from trainlab.train.metrics import confusion_matrix
from trainlab.train.optim import create_optimizer, create_schedule
from trainlab.train.trainer import Trainer, synchronize

STREAM_FIT_SAMPLE = 4096  # images the preprocessing of a streamed dataset is fitted on


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, float]]
    model: torch.nn.Module
    run_dir: Path | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}, but CUDA is not available here (expected auto or cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"train.device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Loaders:
    train: DeviceLoader | StreamLoader
    val: DeviceLoader | StreamLoader
    test: DeviceLoader | StreamLoader
    fit_images: torch.Tensor  # uint8 training images on the device, to fit the preprocessing on


def make_loaders(data: ImageDataset, cfg: Config, device: torch.device) -> Loaders:
    """Seeded train/validation split of the training set; the test set stays untouched until the end.
    In-memory datasets move to the device once; streamed image folders are read by worker processes."""
    train_idx, val_idx = split_train_val(len(data.train_images), cfg.data.val_size, cfg.train.seed)
    if cfg.data.limit_train is not None:
        if cfg.data.limit_train <= 0:
            raise ConfigError(f"data.limit_train must be positive, got {cfg.data.limit_train}")
        train_idx = train_idx[: cfg.data.limit_train]
    batch, eval_batch, seed = cfg.data.batch_size, cfg.data.eval_batch_size, cfg.train.seed
    if data.streamed:
        stream = partial(StreamLoader, workers=cfg.data.workers, device=device)
        shuffled = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed))
        return Loaders(
            stream(
                data.train_images,
                data.train_labels,
                train_idx,
                batch,
                shuffle=True,
                drop_last=True,
                seed=seed,
            ),
            stream(data.train_images, data.train_labels, val_idx, eval_batch),
            stream(data.test_images, data.test_labels, torch.arange(len(data.test_images)), eval_batch),
            data.train_images[train_idx[shuffled[:STREAM_FIT_SAMPLE]]].to(device),
        )
    train_x = data.train_images[train_idx].to(device)
    return Loaders(
        DeviceLoader(
            train_x, data.train_labels[train_idx].to(device), batch, shuffle=True, drop_last=True, seed=seed
        ),
        DeviceLoader(
            data.train_images[val_idx].to(device), data.train_labels[val_idx].to(device), eval_batch
        ),
        DeviceLoader(data.test_images.to(device), data.test_labels.to(device), eval_batch),
        train_x,
    )


def build_model(cfg: Config, data_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    return create_model(
        cfg.model.name,
        in_channels=data_shape[0],
        num_classes=num_classes,
        image_size=data_shape[1],
        init=cfg.model.init,
        init_options=cfg.model.init_options,
        **cfg.model.options,
    )


def create_penalty_from(cfg: Config):
    if cfg.penalty.name == "none":
        return None
    from trainlab.nn.regularize import create_penalty

    return create_penalty(cfg.penalty.name, cfg.penalty.strength, **cfg.penalty.options)


def train(
    cfg: Config,
    out: Path | str | None = None,
    *,
    resume: bool = False,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one configuration. With `out`, everything is written to that run directory;
    with `resume`, training continues from out/checkpoints/last.safetensors."""
    started = time.perf_counter()
    run_dir = Path(out) if out is not None else None
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    clock = Stopwatch(device)

    with clock("load"):
        data = load_dataset(cfg.data.dataset, cfg.data.memory_budget_mb)
        loaders = make_loaders(data, cfg, device)
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    if not standardizer.keeps_shape:
        image_modes = [m for m in PREPROCESSING_MODES.list() if PREPROCESSING_MODES.meta(m)["keeps_shape"]]
        raise ConfigError(
            f"data.preprocess={cfg.data.preprocess!r} returns (N, k) feature vectors, not images; "
            f"training needs an image-shaped mode ({', '.join(image_modes)})"
        )
    model = build_model(cfg, data.image_shape, data.num_classes).to(device)
    with clock("init"):  # the clock of the speed goals starts here, at the first touch of the weights
        standardizer.fit(loaders.fit_images)
        if cfg.model.init and INITIALIZERS.meta(cfg.model.init).get("needs_data"):
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
            Checkpointer(run_dir / "checkpoints", fixed_tensors, meta, every=cfg.train.checkpoint_every),
        ]
    if cfg.train.diagnose:
        from trainlab.diagnose import diagnostic_callbacks

        run_callbacks += diagnostic_callbacks(run_dir)

    trainer = Trainer(
        model,
        create_optimizer(model, cfg.optim),
        epochs=cfg.train.epochs,
        schedule=create_schedule(cfg.schedule, cfg.train.epochs),
        transform=standardizer,
        augment=augment if augment else None,
        penalty=create_penalty_from(cfg),
        label_smoothing=cfg.train.label_smoothing,
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
            sample = loaders.fit_images[:batch]
            trainer.warm_up(sample.repeat(-(-batch // len(sample)), 1, 1, 1)[:batch])
    setup_seconds = time.perf_counter() - started

    with clock("fit"):
        history = trainer.fit(loaders.train, loaders.val)
    with clock("eval"):
        logits, labels = (
            trainer.predict_logits(loaders.test)
            if len(loaders.test)
            else (torch.zeros(0, data.num_classes), torch.zeros(0, dtype=torch.long))
        )
    predictions = logits.argmax(1)
    summary = {
        "test_accuracy": float((predictions == labels).float().mean()) if len(labels) else float("nan"),
        "test_loss": float(torch.nn.functional.cross_entropy(logits, labels))
        if len(labels)
        else float("nan"),
        "best_val_accuracy": max(
            (h.get("val_accuracy", float("nan")) for h in history), default=float("nan")
        ),
        "epochs_run": trainer.epoch,
        **timing_summary(clock, history, setup_seconds, started),
        "device": device_name(device),
        "torch_version": torch.__version__,
        "seed": cfg.train.seed,
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if run_dir is not None:
        confusion = confusion_matrix(predictions, labels, data.num_classes).cpu()
        write_outputs(run_dir, trainer, summary, meta, fixed_tensors, confusion)
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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def write_outputs(run_dir, trainer, summary, meta, fixed_tensors, confusion) -> None:
    from trainlab.report.html import write_report

    weights = prefixed("model", trainer.eval_model.state_dict())
    save_checkpoint(run_dir / "model.safetensors", {**weights, **fixed_tensors}, meta)
    summary = {**summary, "confusion_matrix": confusion.tolist()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    write_report(run_dir, meta["config"], trainer.history, summary, meta["classes"])
