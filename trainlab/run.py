"""A whole run, as the lecture orders it: dataset -> preprocess -> augment -> model -> trainer ->
evaluate -> report. `train(cfg, out)` is what `trainlab train` calls.

Run directory:
    config.json            the fully resolved config
    metrics.csv            one row per epoch
    steps.csv              one row per optimisation step: training loss and learning rate
    checkpoints/           last.safetensors (resume point), best.safetensors
    model.safetensors      the evaluated weights + preprocessing + class names, for eval / predict
    summary.json           test accuracy and loss, best validation accuracy, timing, device, versions;
                           written last, so it marks the run finished
    curves.png, report.html
    tensorboard/           event files, with log.tensorboard (trainlab.report.tensorboard)
    .trainlab.lock         flock()ed while a process trains into the directory

A new run refuses a directory that holds one unless told to overwrite it; a resume may change only the
trainlab.rundir.RESUMABLE keys (more epochs, say), and a resume of a finished run writes nothing.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config import Config
from trainlab.data.augment import Augment
from trainlab.data.datasets import ImageDataset, load_dataset
from trainlab.data.preprocess import Standardizer
from trainlab.data.splits import make_loaders
from trainlab.device import device_name, resolve_device, synchronize
from trainlab.ensemble.independent import independent_ensemble, is_stacked
from trainlab.ensemble.snapshots import snapshot_predictor, snapshot_summary, write_snapshots
from trainlab.errors import ConfigError, TrainlabError
from trainlab.inference import evaluate_outputs
from trainlab.io import atomic_write_json, read_json, remove_stale_temporaries
from trainlab.models import model_from_config
from trainlab.models.factory import check_model_options, require_vector_input
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.rundir import clear_for_new_run, locked_run_dir, resume_point
from trainlab.tasks import task_from_config
from trainlab.tasks.tta import tta_of
from trainlab.training.averaging import (
    SnapshotEnsemble,
    averaging_callbacks,
    check_averaging,
    image_batches,
    recomputes_bn,
    run_schedule,
    update_bn,
)
from trainlab.training.callbacks import (
    Callback,
    Checkpointer,
    CSVLogger,
    EarlyStopping,
    ProgressBar,
    StepLogger,
)
from trainlab.training.checkpoint import (
    one_line,
    prefixed,
    save_checkpoint,
)
from trainlab.training.distributed import (
    check_global_batch,
    check_sync_bn,
    convert_sync_batchnorm,
    init_distributed,
)
from trainlab.training.optim import create_optimizer
from trainlab.training.trainer import Trainer
from trainlab.training.transfer import prepare_transfer, transfer_param_groups


@dataclass
class RunResult:
    summary: dict[str, Any]
    history: list[dict[str, float]]
    model: torch.nn.Module | None  # None when a resume found the run finished and trained nothing
    run_dir: Path | None
    notes: list[str] = field(default_factory=list)  # what a resume or the directory's cleanup did


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
    if cfg.eval.tta is None and cfg.train.tta:
        raise ConfigError(f"train.tta mirrors the model's input, but {why}; set train.tta=false")
    if tta_of(cfg.eval.tta, cfg.train.tta):
        raise ConfigError(f"eval.tta={cfg.eval.tta!r} moves the model's input, but {why}; set eval.tta=none")


def train(
    cfg: Config,
    out: Path | str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one configuration. With `out`, everything is written to that run directory,
    which is locked while training; a directory that holds a run already is refused unless `overwrite`
    (which deletes that run's outputs first). With `resume`, training continues from
    out/checkpoints/last.safetensors (mid-epoch too), or from step 0 if the run stopped before its
    first checkpoint; `cfg` may differ from out/config.json in rundir.RESUMABLE keys only, and the new
    values are recorded there. Resuming a finished run trains nothing, writes nothing and says so.
    (`trainlab.train`, trainlab.dispatch, also takes scenes runs.)"""
    check_model_options(cfg.model.name, cfg.model.options)  # before any data or directory is touched
    tta_of(cfg.eval.tta, cfg.train.tta)
    check_averaging(cfg)
    if cfg.log.tensorboard:
        from trainlab.report.tensorboard import summary_writer_class

        summary_writer_class()  # the optional extra is there, or one line that names it
    return in_run_directory(
        out,
        cfg,
        resume,
        overwrite,
        lambda run_dir, checkpoint, notes: run_pipeline(
            cfg, run_dir, checkpoint, list(callbacks), progress, notes
        ),
        ranks=lambda: init_distributed(resolve_device(cfg.train.device), cfg.train.seed),
        folders=("", "checkpoints", "diagnostics"),
    )


def in_run_directory(
    out: Path | str | None,
    cfg: Config,
    resume: bool,
    overwrite: bool,
    pipeline: Callable[[Path | None, tuple | None, list[str]], RunResult],
    ranks: Callable[[], Any] = lambda: None,
    folders: tuple[str, ...] = ("", "checkpoints"),
) -> RunResult:
    """The directory rules every run follows (train, trainlab.vision_run): `pipeline(run_dir, checkpoint,
    notes)` runs in `out`, locked, after the stale temporaries of killed writes in `folders` are
    removed and the directory is cleared for a new run (refused unless `overwrite`) or its resume point
    found; a finished run is left as it is. `ranks()` starts the process group of a distributed run,
    whose rank 0 alone locks, clears and writes. Without `out`, nothing is written."""
    if out is None:
        if resume:
            raise TrainlabError("resume needs the run directory")
        return pipeline(None, None, [])
    run_dir = Path(out)
    if resume and overwrite:
        raise TrainlabError(f"{run_dir}: resume continues a run and overwrite replaces it; choose one")
    if resume and not (run_dir / "config.json").is_file():
        raise TrainlabError(f"{run_dir}: no config.json (expected a run directory to resume)")
    group = ranks()
    writer = group is None or group.is_writer  # in a distributed run rank 0 locks, clears and writes
    with locked_run_dir(run_dir) if writer else contextlib.nullcontext():
        # under the lock no write is in flight: these are what a killed process left
        stale = [p for d in (folders if writer else ()) for p in remove_stale_temporaries(run_dir / d)]
        checkpoint, notes = None, []
        if resume:
            checkpoint, notes = resume_point(run_dir, cfg)
        elif writer:
            clear_for_new_run(run_dir, overwrite)
        if group is not None:  # the directory is cleared before any rank goes on
            group.barrier()
        if stale:
            shown = ", ".join(str(p) for p in stale[:3]) + (", ..." if len(stale) > 3 else "")
            notes.append(f"removed {len(stale)} stale temporary file(s) of interrupted writes: {shown}")
        finished = finished_run(run_dir, cfg, checkpoint, notes) if resume else None
        return finished or pipeline(run_dir, checkpoint, notes)


def run_pipeline(
    cfg: Config,
    run_dir: Path | None,
    checkpoint: tuple[dict, dict] | None,
    callbacks: list[Callback],
    progress: bool,
    notes: list[str],
) -> RunResult:
    """The run itself, from `checkpoint` (tensors, meta) when given; run_dir is locked and checked."""
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    ranks = init_distributed(device, cfg.train.seed)  # None: one process, as always
    if ranks is not None:
        device = ranks.device
        check_global_batch(cfg.data.batch_size, ranks.world)
        check_sync_bn(cfg.train.sync_bn, ranks)
        if cfg.train.unfreeze_at is not None and ranks.world > 1:  # DDP syncs what trained at its wrap
            raise ConfigError(
                f"train.unfreeze_at={cfg.train.unfreeze_at} with {ranks.world} processes: DDP synchronises "
                "only the parameters that train when it wraps the model; run the unfreeze on one process"
            )
    writer = ranks is None or ranks.is_writer
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
    # after the initialisation, which the pretrained weights replace; a resume has them in its checkpoint
    freezing = prepare_transfer(model, cfg, load=checkpoint is None)
    if cfg.train.sync_bn and ranks is not None:
        model = convert_sync_batchnorm(model)
    augment = Augment(cfg.data.augment, seed=cfg.train.seed, num_classes=data.num_classes, device=str(device))
    if len(loaders.train) == 0:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training split")

    meta = {"config": cfg.to_dict(), "classes": data.classes, "image_shape": list(data.image_shape)}
    fixed_tensors = prefixed("preprocess", standardizer.state_dict())
    run_callbacks = [ProgressBar(progress and writer), *callbacks, *averaging_callbacks(cfg)]
    if freezing is not None:
        run_callbacks.append(freezing)
    if cfg.train.early_stopping:
        run_callbacks.append(
            EarlyStopping(cfg.train.early_stopping, cfg.train.min_delta, restore_best=cfg.train.restore_best)
        )
    if run_dir is not None and writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        run_callbacks += [CSVLogger(run_dir / "metrics.csv"), StepLogger(run_dir / "steps.csv")]
    if run_dir is not None:  # on every rank: a checkpoint reduces across them; rank 0 writes it
        run_callbacks += [
            Checkpointer(
                run_dir / "checkpoints",
                fixed_tensors,
                meta,
                every=cfg.train.checkpoint_every,
                steps=cfg.train.checkpoint_steps,
            ),  # fmt: skip
        ]
    if cfg.train.diagnose and writer:
        from trainlab.diagnose import diagnostic_callbacks

        run_callbacks += diagnostic_callbacks(run_dir)
    if cfg.log.tensorboard and run_dir is not None and writer:
        from trainlab.report.tensorboard import TensorBoardLogger

        run_callbacks.append(TensorBoardLogger(run_dir / "tensorboard", cfg.to_dict(), cfg.train.diagnose))

    independent = None
    if cfg.ensemble.members > 1:  # M seeded members trained as one model (docs/ensembles.md)
        independent = independent_ensemble(cfg, loaders, standardizer, task, data.num_classes, device)
        model, task, standardizer = independent.model, independent.task, independent.transform
        loaders.train, augment = independent.loader, independent.augment
    trainer = Trainer(
        model,
        create_optimizer(model, cfg.optim, transfer_param_groups(model, cfg) if freezing else None),
        epochs=cfg.train.epochs,
        task=task,
        schedule=run_schedule(cfg),
        transform=standardizer,
        augment=augment if augment else None,
        penalty=create_penalty_from(cfg),
        grad_clip=cfg.train.grad_clip,
        ema_decay=cfg.train.ema,
        tta=tta_of(cfg.eval.tta, cfg.train.tta),
        callbacks=run_callbacks,
        stateful={"loader": loaders.train, "augment": augment},
        compile=cfg.train.compile,
        precision=cfg.train.precision,
        channels_last=cfg.train.channels_last,
        device=device,
        ranks=ranks,
    )
    if checkpoint is not None:
        last = run_dir / "checkpoints" / "last.safetensors"
        try:
            trainer.load_state(*checkpoint)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # parses, but is not a resume point
            raise TrainlabError(f"{last}: not a resume point of this run ({one_line(e)})") from None
    if cfg.train.compile:
        with clock("compile"):  # one-off: compiled before the epochs' clock runs, then undone exactly
            # a rank's batch; a streamed folder's fit sample may hold fewer images: tile it
            batch = cfg.data.batch_size // (ranks.world if ranks is not None else 1)
            tiles = -(-batch // len(loaders.fit_images))
            images = loaders.fit_images[:batch].repeat(tiles, 1, 1, 1)[:batch]
            trainer.warm_up(images, loaders.fit_targets[:batch].repeat(tiles)[:batch])
    setup_seconds = time.perf_counter() - started

    with clock("fit"):
        history = trainer.fit(loaders.train, loaders.val)
        if recomputes_bn(cfg):  # an average of weights has no measured batch-norm statistics
            batches = image_batches(loaders.fit_images, cfg.data.batch_size)  # clean, not augmented
            update_bn(trainer.eval_model, batches, trainer.model_input)
        if independent is not None:  # the members' validation accuracies: the weights of "weighted"
            independent.weigh_members(trainer, loaders.val)
    with clock("eval"):
        snapshots = next((cb for cb in run_callbacks if isinstance(cb, SnapshotEnsemble)), None)
        predictor = trainer.predictor()
        if snapshots:  # the snapshot ensemble is the evaluated model (trainlab.ensemble.snapshots)
            predictor = snapshot_predictor(trainer, snapshots, cfg.ensemble.combine, loaders)
        # no test split (an image folder without test/): make_loaders has warned
        final, test_outputs = {}, None
        if loaders.test is not None:
            test_outputs = predictor.run(loaders.test)  # kept for the report's gallery
            val = predictor.run(loaders.val) if len(loaders.val) else None  # fits the temperature
            final = evaluate_outputs(task, *test_outputs, data.classes, val=val)
    # the snapshots one by one, after the clock like the members below
    ensemble = snapshot_summary(predictor, loaders) if snapshots else {}
    # each member on the test split, after the clock: not part of the time to a result
    member_summary = independent.summary(trainer, loaders.test) if independent is not None else {}
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
        **ensemble,
        **member_summary,
    }
    if ranks is not None:  # every rank has evaluated; rank 0 writes the outputs
        ranks.barrier()
    if run_dir is not None and writer:
        if snapshots:
            write_snapshots(run_dir, predictor, ensemble, meta, fixed_tensors)
        if independent is not None:
            independent.write(run_dir, trainer, meta, fixed_tensors)
        reported = {k: v for k, v in final.items() if k == "confusion_matrix"}
        write_outputs(run_dir, trainer, {**summary, **reported}, meta, fixed_tensors, data, test_outputs)
    return RunResult(summary, history, trainer.eval_model, run_dir, notes)


def finished_run(
    run_dir: Path, cfg: Config, checkpoint: tuple[dict, dict] | None, notes: list[str]
) -> RunResult | None:
    """The run as it stands, when it has finished and `cfg` asks for no more epochs; else None. Finished:
    summary.json, written last, is that of the last checkpoint, which has no epoch in flight."""
    summary_path = run_dir / "summary.json"
    model_files = [run_dir / "model.safetensors", run_dir / "ensemble.json"]  # a run, or an ensemble
    if checkpoint is None or not summary_path.exists() or not any(p.exists() for p in model_files):
        return None
    meta = checkpoint[1]
    summary = read_json(summary_path)
    if meta["progress"] is not None or summary.get("epochs_run") != meta["epoch"]:
        return None  # the outputs are older than the checkpoint: an extension was interrupted
    stopped = bool(meta.get("stop_training"))
    if cfg.train.epochs > meta["epoch"] and not stopped:
        return None  # more epochs asked for
    how = "stopped early" if stopped else f"pass --epochs N with N > {meta['epoch']} to train on"
    note = f"{run_dir}: finished after {meta['epoch']} epochs ({how}); nothing to resume, nothing written"
    return RunResult(summary, meta["history"], None, run_dir, [*notes, note])


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


def write_outputs(
    run_dir: Path,
    trainer: Trainer,
    summary: dict,
    meta: dict,
    fixed_tensors: dict,
    data: ImageDataset,
    test_outputs: tuple[torch.Tensor, Any] | None,
) -> None:
    from trainlab.report.html import ReportInputs, write_report

    outputs, targets = test_outputs if test_outputs is not None else (None, None)
    first = torch.arange(min(4, len(data.train_images)))  # the augmentation preview's rows
    inputs = ReportInputs(trainer.predictor(), data.test_images, outputs, targets, data.train_images[first])

    if not is_stacked(trainer.eval_model):  # an independent ensemble's members are its model files
        weights = prefixed("model", trainer.eval_model.state_dict())
        save_checkpoint(run_dir / "model.safetensors", {**weights, **fixed_tensors}, meta)
    write_report(run_dir, meta["config"], trainer.history, summary, meta["classes"], inputs)
    atomic_write_json(run_dir / "summary.json", summary)  # last: it marks the run finished
