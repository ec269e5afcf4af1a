"""Using a trained model: load a run, evaluate it on the test set, predict new image files.

Everything goes through the run's own inference path (trainlab.inference.Predictor): the evaluated
weights stored in model.safetensors (the EMA copy when the run kept one, the restored best weights
after early stopping), the preprocessing statistics stored beside them, the run's precision and memory
format, and its test-time augmentation. `trainlab eval RUN` therefore reproduces summary.json's
test metrics exactly on the device the run used. A new image goes through exactly the training
conversion: the dataset's channel count and size (formats.load_image), then the preprocessing, which for
the pca modes is the stored projection onto the k components the model was built for.

A run's files are untrusted input (docs/evaluation.md): the model file is verified and checked before
use, `eval` refuses a dataset whose classes differ from the model's, and `predict` reports a file it
cannot predict and predicts the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.config import Config
from trainlab.data import formats
from trainlab.data.datasets import ImageDataset, load_dataset
from trainlab.data.preprocess import Standardizer
from trainlab.data.splits import make_loaders, test_loader
from trainlab.device import resolve_device
from trainlab.errors import ConfigError, DataError, TrainlabError
from trainlab.inference import Predictor, evaluate_outputs, uses_bf16, uses_channels_last
from trainlab.tasks import task_from_config
from trainlab.tasks.tta import tta_of
from trainlab.training.checkpoint import (
    ModelFile,
    load_model_file,
    model_with_weights,
    one_line,
    unprefixed,
)


@dataclass
class TrainedModel:
    predictor: Predictor
    classes: list[str]
    image_shape: tuple[int, int, int]
    config: Config
    device: torch.device

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the model's float32 outputs, exactly as the run's final evaluation."""
        return self.predictor.outputs(images.to(self.device))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> class probabilities (B, K) of a classifier."""
        return torch.softmax(self.outputs(images), dim=1)


def load_trained(run_dir: Path | str, device: str = "auto") -> TrainedModel:
    """The evaluated weights of a finished run (RUN_DIR/model.safetensors), on `device`. The file is
    checked before use (trainlab.training.checkpoint: digest, schema, weights against the model its
    config builds), then one blank image goes through the whole inference path, so that a file that
    cannot predict is refused here, in one line, rather than at the first prediction."""
    path = Path(run_dir) / "model.safetensors"
    if not path.exists():
        raise TrainlabError(
            f"{run_dir}: no model.safetensors (expected the directory of a finished `trainlab train` run)"
        )
    return load_trained_file(path, device)


def load_trained_file(path: Path, device: str = "auto") -> TrainedModel:
    """load_trained for one model file (a run's model.safetensors, or an ensemble's member)."""
    stored = load_model_file(path)
    cfg = stored.config
    target = resolve_device(device)
    standardizer = stored_standardizer(stored)
    input_shape = standardizer.output_shape(stored.image_shape)
    model = model_with_weights(cfg, input_shape, len(stored.classes), stored.tensors, path)
    model.to(target).eval()
    channels_last = uses_channels_last(cfg.train.channels_last, target)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    predictor = Predictor(
        model,
        task_from_config(cfg),
        standardizer.to(target),
        tta=tta_of(cfg.eval.tta, cfg.train.tta),  # the run's policy, from its stored config
        bf16=uses_bf16(cfg.train.precision, target),
        channels_last=channels_last,
    )
    trained = TrainedModel(predictor, stored.classes, stored.image_shape, cfg, target)
    check_blank_prediction(trained, input_shape, path)
    return trained


def stored_standardizer(stored: ModelFile) -> Standardizer:
    """The run's preprocessing with the statistics stored beside the weights."""
    cfg, path = stored.config, stored.path
    try:
        standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except TypeError as e:  # an option named like Standardizer's own argument
        raise ConfigError(f"{path}: data.preprocess_options: {e}") from None
    stats = unprefixed("preprocess", stored.tensors)
    features = math.prod(stored.image_shape)
    components = stats.get("components")
    if not standardizer.keeps_shape and (
        components is None or components.ndim != 2 or components.shape[0] != features
    ):
        got = list(components.shape) if components is not None else "none"
        raise TrainlabError(
            f"{path}: data.preprocess={standardizer.mode!r} needs a tensor 'preprocess.components' of "
            f"shape [{features}, k] for {list(stored.image_shape)} images; it has {got}"
        )
    standardizer.load_state_dict(stats)
    return standardizer


def check_blank_prediction(trained: TrainedModel, input_shape: tuple[int, ...], path: Path) -> None:
    """One blank image through preprocessing and model: statistics that do not fit the images, a model
    that cannot take them, or weights whose outputs are not finite are refused in one line."""
    blank = torch.zeros(1, *trained.image_shape, dtype=torch.uint8)
    size = "x".join(map(str, trained.image_shape))
    try:
        inputs = trained.predictor.inputs(blank.to(trained.device))
        if tuple(inputs.shape) != (1, *input_shape):
            raise TrainlabError(
                f"{path}: its preprocessing turns a {size} image into {list(inputs.shape[1:])}, "
                f"where the model takes {list(input_shape)}"
            )
        outputs = trained.outputs(blank)
    except RuntimeError as e:
        raise TrainlabError(
            f"{path}: the stored model does not run on a {size} image ({one_line(e)})"
        ) from None
    if not torch.isfinite(outputs).all():
        raise TrainlabError(f"{path}: the stored model's outputs for a blank image are not finite")


def check_dataset_fits(trained: TrainedModel, data: ImageDataset, run_dir: Path | str) -> None:
    """The model's outputs are the classes it was trained on, in that order: a dataset whose classes are
    renamed, reordered, added or removed would be scored against permuted labels."""
    if list(data.classes) != trained.classes:
        raise DataError(
            f"{run_dir}: the model was trained on classes {trained.classes}, but {data.name} has "
            f"{list(data.classes)} (expected the same names in the same order)"
        )
    if tuple(data.image_shape) != trained.image_shape:
        raise DataError(
            f"{run_dir}: the model was trained on {list(trained.image_shape)} images, but {data.name} "
            f"has {list(data.image_shape)}"
        )


def evaluate_run(run_dir: Path | str, device: str = "auto") -> dict[str, Any]:
    """The run's test metrics (test_loss, test_accuracy, ...) by the path its final evaluation took,
    its calibration (NLL, Brier, ECE, and after temperature scaling fitted again on the run's own seeded
    validation split, as the run did), and what the task reports (a classifier's confusion matrix and
    per-class precision/recall/F1)."""
    trained = load_trained(run_dir, device)
    cfg = trained.config
    data = load_dataset(cfg.data.dataset, cfg.data.memory_budget_mb)
    check_dataset_fits(trained, data, run_dir)
    outputs = trained.predictor.run(test_loader(data, cfg, trained.device))
    val = validation_outputs(trained.predictor, data, cfg, trained.device)
    result = evaluate_outputs(trained.predictor.task, *outputs, trained.classes, val=val)
    return {**result, "classes": trained.classes}


def validation_outputs(
    predictor, data: ImageDataset, cfg: Config, device: torch.device, members: bool = False
) -> tuple | None:
    """(outputs, targets) of `predictor` on the run's own seeded validation split, which the run fitted
    its temperature on (with `members`, an ensemble's uncombined member outputs (N, M, K)); None when
    the run held no validation split out."""
    val_split = make_loaders(data, cfg, device).val
    if not len(val_split):
        return None
    return predictor.run_members(val_split) if members else predictor.run(val_split)


def predict_files(
    trained: TrainedModel, files: list[str], top_k: int = 3, batch_size: int = 256
) -> list[dict[str, Any]]:
    """One entry per file, in order: a classifier's {"file", "predictions": [{"label", "index",
    "probability"}, ...]}, another task's {"file", "outputs": [...]}, or {"file", "error": one line}
    for a file that cannot be read or whose outputs are not finite: a bad file costs only its own entry."""
    results = []
    for start in range(0, len(files), batch_size):
        results += predict_batch(trained, files[start : start + batch_size], top_k)
    return results


def predict_batch(trained: TrainedModel, files: list[str], top_k: int) -> list[dict[str, Any]]:
    channels, height, width = trained.image_shape
    results: list[dict[str, Any]] = []
    images, rows = [], []
    for f in files:
        results.append({"file": str(f)})
        try:
            images.append(torch.from_numpy(formats.load_image(Path(f), channels, (height, width))))
        except (TrainlabError, OSError) as e:
            results[-1]["error"] = str(e)
            continue
        rows.append(len(results) - 1)
    if not images:
        return results
    outputs = trained.outputs(torch.stack(images))
    classify = trained.predictor.task.name == "classification"
    probs = torch.softmax(outputs, dim=1) if classify else outputs
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    for row, index in enumerate(rows):
        entry = results[index]
        if not torch.isfinite(outputs[row]).all():
            entry["error"] = f"{entry['file']}: the model's outputs for this image are not finite"
        elif not classify:
            entry["outputs"] = outputs[row].tolist()
        else:
            entry["predictions"] = [
                {"label": trained.classes[i], "index": int(i), "probability": float(p)}
                for p, i in zip(top.values[row].tolist(), top.indices[row].tolist())
            ]
    return results
