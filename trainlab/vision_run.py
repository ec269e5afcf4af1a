"""The vision runner: a run on Fashion-MNIST scenes (docs/vision.md), for the tasks after classification
in the DNN & CNN deck: localization, detection, segmentation and instance segmentation.

    load_scenes -> preprocess -> augment (boxes and masks move with the image) -> model -> Trainer ->
    final test evaluation -> run directory

`trainlab train --dataset fmnist-scenes --task detection` comes here (cli.py, via `is_vision_run`); the
run directory is that of a classification run where it applies:

    config.json, metrics.csv, steps.csv    the resolved config, one row per epoch, one per step
    checkpoints/                           last.safetensors (exact resume, mid-epoch too), best.safetensors
    model.safetensors                      the evaluated weights + preprocessing + class names (digest)
    summary.json                           the test metrics (test_*), what the task reports, timing; last
    curves.png, predictions.png            the learning curves; test scenes with the predictions drawn

**The task hook.** A task plugs in through the task registry (trainlab.tasks.base.TASKS) alone; the
runner calls nothing but the Task interface:

- `loss(outputs, targets)`, `metric_sums(device)`, `accumulate(sums, outputs, targets)` in training,
  `evaluate(outputs, targets) -> {"loss", metric: float}` over a whole split (the validation split every
  epoch, the test split at the end), `report(outputs, targets, classes) -> dict` for the summary (lists
  allowed, e.g. per-class AP), and `monitor` / `higher_is_better` for the best checkpoint;
- targets are Scenes.targets() (trainlab.data.scenes), batched: {"labels" (B, K) int64 with -1 padding,
  "boxes" (B, K, 4) xyxy pixels, "instances" (B, S, S) uint8};
- models are built with `num_classes` = the 10 object classes (a segmentation model adds the background
  channel itself) and `image_size` = the canvas side S;
- for drawing, `predict`, and `eval --coco-json`: a task that finds objects (localization, detection,
  instance) has `decode(outputs) -> Detections` (trainlab.tasks.coco_eval; with masks for instance); a
  task without objects (segmentation) has `predict(outputs) -> (N, S, S) int64`, 0 = background and
  c + 1 = class c, as Scenes.semantic().

Not supported here (refused in one line): distributed runs, ensembles and weight averaging, test-time
augmentation (a flip would have to move the boxes back), transfer options.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainlab.config import Config, read_recipe
from trainlab.data.augment.scenes import augment_scenes
from trainlab.data.loader import DeviceLoader, index_targets
from trainlab.data.preprocess import Standardizer
from trainlab.data.scenes import SPLITS, Scenes, load_scenes, mask_boxes
from trainlab.device import device_name, resolve_device
from trainlab.errors import ConfigError, TrainlabError
from trainlab.inference import evaluate_outputs
from trainlab.io import atomic_write_bytes, atomic_write_json
from trainlab.models.factory import check_model_options, model_from_config
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.report.figures import curves_figure, save_figure
from trainlab.report.scenes import draw_scenes
from trainlab.run import (
    RunResult,
    Stopwatch,
    create_penalty_from,
    in_run_directory,
    seed_everything,
    timing_summary,
)
from trainlab.tasks import task_from_config
from trainlab.tasks.coco_eval import Detections, evaluate_coco
from trainlab.training.averaging import run_schedule
from trainlab.training.callbacks import (
    Callback,
    Checkpointer,
    CSVLogger,
    EarlyStopping,
    ProgressBar,
    StepLogger,
)
from trainlab.training.checkpoint import one_line, prefixed, save_checkpoint
from trainlab.training.optim import create_optimizer
from trainlab.training.trainer import Trainer

SCENE_DATASET = "fmnist-scenes"  # and its variants, fmnist-scenes:localize
VISION_TASKS = ("localization", "detection", "segmentation", "instance")
FIGURE_SCENES = 16  # test scenes drawn in predictions.png
# the recipe of a vision task when `trainlab train` names none
DEFAULT_RECIPES = {
    "localization": "scenes-localize",
    "detection": "scenes-detect",
    "segmentation": "scenes-segment",
    "instance": "scenes-instance",
}
SHOWN_SCORE = 0.3  # the detections drawn (and listed by predict); the evaluation keeps them all


def is_vision_run(cfg: Config) -> bool:
    """A run for this runner: a scenes dataset, or a vision task."""
    return cfg.data.dataset.split(":")[0] == SCENE_DATASET or cfg.task.name in VISION_TASKS


def check_vision_config(cfg: Config) -> None:
    """ConfigError, before any work, for what a vision run cannot do."""
    if cfg.data.dataset.split(":")[0] != SCENE_DATASET:
        raise ConfigError(
            f"task.name={cfg.task.name!r} trains on Fashion-MNIST scenes: expected data.dataset "
            f"fmnist-scenes or fmnist-scenes:localize, got {cfg.data.dataset!r}"
        )
    if cfg.task.name not in VISION_TASKS:
        raise ConfigError(
            f"data.dataset={cfg.data.dataset!r} is a scenes dataset: expected task.name one of "
            f"{', '.join(VISION_TASKS)}, got {cfg.task.name!r}"
        )
    unsupported = {
        "ensemble.members": (cfg.ensemble.members, 1),
        "ensemble.snapshots": (cfg.ensemble.snapshots, 0),
        "train.swa_start": (cfg.train.swa_start, None),
        "train.average_top_k": (cfg.train.average_top_k, None),
        "train.tta": (cfg.train.tta, False),
        "eval.tta": (cfg.eval.tta, None) if cfg.eval.tta != "none" else (None, None),
        "train.freeze": (cfg.train.freeze, "none"),
        "model.pretrained": (cfg.model.pretrained, None),
        "model.keep_stages": (cfg.model.keep_stages, None),
        "data.per_class": (cfg.data.per_class, None),
    }
    for key, (value, plain) in unsupported.items():
        if value != plain:
            raise ConfigError(f"{key}={value!r}: not supported by a {cfg.task.name} run (expected {plain!r})")
    parse_scene_augment(cfg.data.augment)


# --------------------------------------------------------------------------------------------------
class SceneAugment:
    """augment_scenes (trainlab.data.augment.scenes) with its own seeded generator, which checkpoints
    carry, so that a resumed run draws the same augmentations. `spec`: "flip,translate=4,scale=0.9-1.1"
    or a table {flip = true, translate = 4, scale = [0.9, 1.1]}; "" is off."""

    def __init__(self, spec: str | dict, seed: int, device: torch.device):
        self.options = parse_scene_augment(spec)
        self.generator = torch.Generator(device=device).manual_seed(seed + 1)  # not the loader's stream

    def __bool__(self) -> bool:
        return bool(self.options)

    def __call__(self, images: torch.Tensor, targets: dict) -> tuple[torch.Tensor, dict]:
        return augment_scenes(images, targets, self.generator, **self.options)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def parse_scene_augment(spec: str | dict) -> dict[str, Any]:
    """data.augment of a scenes run -> augment_scenes' options; {} when off."""
    if isinstance(spec, str):
        table: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            table[key] = True if not sep else value.split("-") if key == "scale" else value
    else:
        table = dict(spec)
    if not table:
        return {}
    unknown = sorted(set(table) - {"flip", "hflip", "translate", "scale"})
    if unknown:
        raise ConfigError(
            f"data.augment: a scenes run takes flip, translate=PIXELS and scale=LO-HI, not {unknown[0]!r}"
        )
    try:
        flip = bool(table.get("flip", table.get("hflip", False)))
        translate = int(table.get("translate", 0))
        scale = tuple(float(s) for s in table.get("scale", (1.0, 1.0)))
    except (TypeError, ValueError):
        raise ConfigError(f"data.augment={spec!r}: expected e.g. 'flip,translate=4,scale=0.9-1.1'") from None
    if translate < 0 or len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"data.augment={spec!r}: translate >= 0 pixels and scale=LO-HI with 0 < LO <= HI")
    return {"flip": flip, "translate": translate, "scale": scale}


# --------------------------------------------------------------------------------------------------
def load_splits(cfg: Config, only: str | None = None) -> dict[str, Scenes]:
    """The train, val and test scenes (generated once, then cached on disk by load_scenes): the published
    splits, whose SHA-256 the docs give, unless data.limit_train, data.val_size (below 2,000; 0: none) or
    data.limit_test ask for fewer scenes, which are then a smaller split of their own (a quick run).
    `only`: that split alone."""
    limits = {"train": cfg.data.limit_train, "val": cfg.data.val_size, "test": cfg.data.limit_test}
    splits = {}
    for split, limit in limits.items():
        if only is not None and split != only:
            continue
        if limit is not None and limit >= SPLITS[split]:
            limit = None
        if limit == 0:
            splits[split] = load_scenes(cfg.data.dataset, split, n=1).index(slice(0, 0))
        else:
            splits[split] = load_scenes(cfg.data.dataset, split, **({"n": limit} if limit else {}))
    return splits


def scene_loader(
    scenes: Scenes, batch_size: int, device: torch.device, train: bool, seed: int
) -> DeviceLoader:
    """The whole split on the device, dict targets sliced per batch."""
    targets = {k: v.to(device) for k, v in scenes.targets().items()}
    return DeviceLoader(
        scenes.images.to(device), targets, batch_size, shuffle=train, drop_last=train, seed=seed
    )


def train_vision(
    cfg: Config,
    out: Path | str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """trainlab.run.train for a scenes run: the same directory rules (a lock, no silent overwrite, a
    resume that changes only rundir.RESUMABLE keys, a finished run left as it is)."""
    check_vision_config(cfg)
    check_model_options(cfg.model.name, cfg.model.options)
    return in_run_directory(
        out,
        cfg,
        resume,
        overwrite,
        lambda run_dir, checkpoint, notes: vision_pipeline(
            cfg, run_dir, checkpoint, list(callbacks), progress, notes
        ),
    )


def vision_pipeline(
    cfg: Config,
    run_dir: Path | None,
    checkpoint: tuple[dict, dict] | None,
    callbacks: list[Callback],
    progress: bool,
    notes: list[str],
) -> RunResult:
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    clock = Stopwatch(device)
    task = task_from_config(cfg)
    with clock("load"):
        splits = load_splits(cfg)
        train_loader = scene_loader(splits["train"], cfg.data.batch_size, device, True, cfg.train.seed)
        val_loader = scene_loader(splits["val"], cfg.data.eval_batch_size, device, False, 0)
        test_loader = scene_loader(splits["test"], cfg.data.eval_batch_size, device, False, 0)
    if len(train_loader) == 0:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the training split")
    classes, image_shape = list(splits["train"].classes), tuple(splits["train"].images.shape[1:])
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    if not standardizer.keeps_shape:
        raise ConfigError(f"data.preprocess={cfg.data.preprocess!r}: a {task.name} model takes images")
    with clock("init"):
        standardizer.fit(train_loader.images)
    model = model_from_config(cfg, image_shape, len(classes)).to(device)
    if cfg.model.init and INITIALIZERS.meta(cfg.model.init).get("needs_data"):  # LSUV, patch whitening
        with clock("init"):
            batch = standardizer(train_loader.images[: cfg.data.batch_size])
            init_model(model, cfg.model.init, batch=batch, **cfg.model.init_options)
    check_model_fits_task(model, task, train_loader, cfg)
    augment = SceneAugment(cfg.data.augment, cfg.train.seed, device)

    meta = {"config": cfg.to_dict(), "classes": classes, "image_shape": list(image_shape)}
    fixed_tensors = prefixed("preprocess", standardizer.state_dict())
    run_callbacks = [ProgressBar(progress), *callbacks]
    if cfg.train.early_stopping:
        run_callbacks.append(
            EarlyStopping(cfg.train.early_stopping, cfg.train.min_delta, restore_best=cfg.train.restore_best)
        )
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        run_callbacks += [
            CSVLogger(run_dir / "metrics.csv"),
            StepLogger(run_dir / "steps.csv"),
            Checkpointer(
                run_dir / "checkpoints",
                fixed_tensors,
                meta,
                every=cfg.train.checkpoint_every,
                steps=cfg.train.checkpoint_steps,
            ),
        ]
    trainer = Trainer(
        model,
        create_optimizer(model, cfg.optim),
        epochs=cfg.train.epochs,
        task=task,
        schedule=run_schedule(cfg),
        transform=standardizer,
        augment=augment if augment else None,
        penalty=create_penalty_from(cfg),
        grad_clip=cfg.train.grad_clip,
        ema_decay=cfg.train.ema,
        callbacks=run_callbacks,
        stateful={"loader": train_loader, "augment": augment},
        compile=cfg.train.compile,
        precision=cfg.train.precision,
        channels_last=cfg.train.channels_last,
        device=device,
    )
    if checkpoint is not None:
        try:
            trainer.load_state(*checkpoint)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            last = run_dir / "checkpoints" / "last.safetensors"
            raise TrainlabError(f"{last}: not a resume point of this run ({one_line(e)})") from None
    setup_seconds = time.perf_counter() - started
    with clock("fit"):
        history = trainer.fit(train_loader, val_loader)
    with clock("eval"):
        outputs, targets = trainer.predictor().run(test_loader)
        final = evaluate_outputs(task, outputs, targets, classes)
    monitor, best = f"val_{task.monitor}", max if task.higher_is_better else min
    summary = {
        **final,
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
        "num_test_scenes": len(splits["test"]),
    }
    if cfg.eval.oracle is not None and hasattr(task, "decode"):  # after the clock: a baseline, not the run
        summary.update(oracle_baseline(splits["test"], oracle_classifier(cfg.eval.oracle, progress), device))
    if run_dir is not None:
        weights = prefixed("model", trainer.eval_model.state_dict())
        save_checkpoint(run_dir / "model.safetensors", {**weights, **fixed_tensors}, meta)
        save_figure(curves_figure(history), run_dir / "curves.png")
        draw_predictions(task, outputs, splits["test"], run_dir / "predictions.png")
        atomic_write_json(run_dir / "summary.json", summary)  # last: it marks the run finished
    return RunResult(summary, history, trainer.eval_model, run_dir, notes)


@torch.no_grad()
def check_model_fits_task(model: torch.nn.Module, task, loader: DeviceLoader, cfg: Config) -> None:
    """One batch through the model (in eval mode, so that no statistic moves) and the task's loss: a
    model whose outputs are not the task's (a classifier for detection, say) is one ConfigError."""
    images, targets = loader.images[:2], index_targets(loader.targets, slice(0, 2))
    was_training = model.training
    try:
        loss = task.loss(model.eval()(images.float() / 255), targets)
    except (RuntimeError, IndexError, ValueError) as e:
        raise ConfigError(
            f"model.name={cfg.model.name!r} does not fit the {task.name} task ({one_line(e)}); "
            f"its recipe's model is {read_recipe_model(task.name)}"
        ) from None
    finally:
        model.train(was_training)
    if loss.ndim != 0:
        raise ConfigError(f"model.name={cfg.model.name!r}: its outputs do not fit the {task.name} task")


def read_recipe_model(task_name: str) -> str:
    recipe = DEFAULT_RECIPES.get(task_name)
    return repr(read_recipe(recipe).get("model", {}).get("name")) if recipe else "not set"


def draw_predictions(task, outputs: torch.Tensor, scenes: Scenes, path: Path) -> None:
    """predictions.png: the first test scenes with what the model predicts on them."""
    first = scenes.index(slice(0, FIGURE_SCENES))
    shown = outputs[: len(first)]
    if hasattr(task, "decode"):
        picture = detections_picture(first.images, task.decode(shown), first.classes)
    else:
        picture = semantic_picture(first.images, task.predict(shown), first.classes)
    atomic_write_bytes(path, png_bytes(picture))


def detections_picture(
    images: torch.Tensor, dets: Detections, classes: list[str], min_score: float = SHOWN_SCORE
):
    """The detections of at least `min_score` drawn on their images (draw_scenes: box, class, score, mask)."""
    drawable = ((dets.boxes[:, 2:] - dets.boxes[:, :2]) >= 1).all(1)  # a box of a pixel or more
    per_image = [(dets.image == i) & (dets.scores >= min_score) & drawable for i in range(len(images))]
    masks = None if dets.masks is None else [dets.masks[keep] for keep in per_image]
    return draw_scenes(
        images,
        [dets.boxes[keep] for keep in per_image],
        [dets.labels[keep] for keep in per_image],
        masks=masks,
        scores=[dets.scores[keep] for keep in per_image],
        classes=classes,
    )


def semantic_picture(images: torch.Tensor, semantic: torch.Tensor, classes: list[str]):
    """Per-pixel classes (N, H, W) (0 background, c + 1 class c) drawn as one mask per class present,
    each with its tight box and name."""
    masks = [torch.stack([s == c + 1 for c in range(len(classes))]) for s in semantic.cpu()]  # (C, H, W) each
    labels = [torch.where(m.flatten(1).any(1), torch.arange(len(classes)), -1) for m in masks]
    return draw_scenes(images, [mask_boxes(m) for m in masks], labels, masks=masks, classes=classes)


def png_bytes(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
ORACLE_RECIPE = "cpu-fast"
CROP = 28  # Fashion-MNIST's side
CROP_MARGIN = 28 / 26  # a Fashion-MNIST item spans about 26 of its 28 pixels


def default_oracle_dir() -> Path:
    return Path.home() / ".cache" / "trainlab" / "sources" / "cpu-fast-fashion-mnist"


def oracle_classifier(spec: str, progress: bool = True) -> Path:
    """The oracle's classifier run: `spec` itself, or for "auto" the cpu-fast recipe on Fashion-MNIST,
    trained on first use and cached in default_oracle_dir()."""
    if spec != "auto":
        return Path(spec)
    out = default_oracle_dir()
    if not ((out / "summary.json").is_file() and (out / "model.safetensors").is_file()):
        from trainlab.config import load_config
        from trainlab.run import train

        cfg = load_config(ORACLE_RECIPE, {"data.dataset": "fashion-mnist"})
        train(cfg, out, overwrite=(out / "config.json").exists(), progress=progress)
    return out


def crop_boxes(images: torch.Tensor, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, S, S) images, (T,) image indices, (T, 4) xyxy boxes -> uint8 (T, 1, 28, 28): the
    square of side max(w, h) * CROP_MARGIN around each box's centre, resampled bilinearly (zeros
    outside the canvas), so that an item fills its crop as a Fashion-MNIST image."""
    side = images.shape[-1]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    extent = (boxes[:, 2:] - boxes[:, :2]).amax(1) * CROP_MARGIN
    theta = torch.zeros(len(boxes), 2, 3, device=boxes.device)
    theta[:, 0, 0] = theta[:, 1, 1] = extent / side
    theta[:, :, 2] = 2 * centre / side - 1  # align_corners=False: pixel i spans [i, i + 1)
    grid = F.affine_grid(theta, [len(boxes), 1, CROP, CROP], align_corners=False)
    crops = F.grid_sample(images[image].float(), grid, mode="bilinear", align_corners=False)
    return crops.round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def oracle_baseline(scenes: Scenes, classifier_dir: Path, device: torch.device, batch: int = 1024) -> dict:
    """The oracle-box classifier: every true box, cropped (crop_boxes) and classified by a Fashion-MNIST
    CNN, is a detection with the classifier's label and probability. Its AP is the ceiling of a detector
    whose boxes are perfect, so the gap between the two is what the boxes cost."""
    from trainlab.predict import load_trained

    classifier = load_trained(classifier_dir, str(device))
    if classifier.classes != list(scenes.classes) or classifier.image_shape != (1, CROP, CROP):
        raise TrainlabError(
            f"eval.oracle={str(classifier_dir)!r}: expected a Fashion-MNIST classifier (1x28x28 images, the "
            f"scenes' classes), got {list(classifier.image_shape)} images of {classifier.classes}"
        )
    image, slot = (scenes.labels >= 0).nonzero(as_tuple=True)
    boxes = scenes.boxes[image, slot]
    crops = crop_boxes(scenes.images, image, boxes)
    probs = torch.cat(
        [classifier.probabilities(crops[i : i + batch]).cpu() for i in range(0, len(crops), batch)]
    )
    scores, labels = probs.max(1)
    dets = Detections(image.cpu(), boxes.cpu(), scores, labels)
    metrics = evaluate_coco(dets, scenes.labels.cpu(), scenes.boxes.cpu(), num_classes=len(scenes.classes))
    return {
        "test_oracle_ap": metrics["ap"],
        "test_oracle_ap50": metrics["ap50"],
        "test_oracle_accuracy": float((labels == scenes.labels[image, slot].cpu()).float().mean()),
        "oracle_classifier": str(classifier_dir),
    }
