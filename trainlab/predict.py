"""Using a trained model: load a run, evaluate it on the test set, predict new image files.

Everything goes through the run's own inference path (trainlab.inference.Predictor): the evaluated
weights stored in model.safetensors (the EMA copy when the run kept one, the restored best weights
after early stopping), the preprocessing statistics stored beside them, the run's precision and memory
format, and its test-time augmentation. `trainlab eval RUN` therefore reproduces summary.json's
test metrics exactly on the device the run used. A new image goes through exactly the training
conversion: the dataset's channel count and size (formats.load_image), then the preprocessing, which for
the pca modes is the stored projection onto the k components the model was built for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.config import Config
from trainlab.data import formats
from trainlab.data.datasets import load_dataset
from trainlab.data.preprocess import Standardizer
from trainlab.data.splits import test_loader
from trainlab.device import resolve_device
from trainlab.errors import TrainlabError
from trainlab.inference import Predictor, evaluate_split, uses_bf16, uses_channels_last
from trainlab.models import model_from_config
from trainlab.tasks import task_from_config
from trainlab.training.checkpoint import load_checkpoint, unprefixed


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
    """The evaluated weights of a finished run (RUN_DIR/model.safetensors), on `device`."""
    path = Path(run_dir) / "model.safetensors"
    if not path.exists():
        raise TrainlabError(
            f"{run_dir}: no model.safetensors (expected the directory of a finished `trainlab train` run)"
        )
    tensors, meta = load_checkpoint(path)
    cfg = Config.from_dict(meta["config"])
    target = resolve_device(device)
    shape = tuple(meta["image_shape"])
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    standardizer.load_state_dict({k: v.to(target) for k, v in unprefixed("preprocess", tensors).items()})
    model = model_from_config(cfg, standardizer.output_shape(shape), len(meta["classes"]))
    model.load_state_dict(unprefixed("model", tensors))
    model.to(target).eval()
    channels_last = uses_channels_last(cfg.train.channels_last, target)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    predictor = Predictor(
        model,
        task_from_config(cfg),
        standardizer,
        tta=cfg.train.tta,
        bf16=uses_bf16(cfg.train.precision, target),
        channels_last=channels_last,
    )
    return TrainedModel(predictor, meta["classes"], shape, cfg, target)


def evaluate_run(run_dir: Path | str, device: str = "auto") -> dict[str, Any]:
    """The run's test metrics (test_loss, test_accuracy, ...) by the path its final evaluation took,
    and what the task reports (a classifier's confusion matrix and per-class precision/recall/F1)."""
    trained = load_trained(run_dir, device)
    cfg = trained.config
    data = load_dataset(cfg.data.dataset, cfg.data.memory_budget_mb)
    result = evaluate_split(trained.predictor, test_loader(data, cfg, trained.device), trained.classes)
    return {**result, "classes": trained.classes}


def predict_files(trained: TrainedModel, files: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """A classifier: [{"file", "predictions": [{"label", "index", "probability"}, ...]}] per image file;
    any other task: [{"file", "outputs": [...]}]."""
    channels, height, width = trained.image_shape
    images = torch.stack(
        [torch.from_numpy(formats.load_image(Path(f), channels, (height, width))) for f in files]
    )
    if trained.predictor.task.name != "classification":
        return [{"file": str(f), "outputs": row} for f, row in zip(files, trained.outputs(images).tolist())]
    probs = trained.probabilities(images)
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        {
            "file": str(f),
            "predictions": [
                {"label": trained.classes[i], "index": int(i), "probability": float(p)}
                for p, i in zip(top.values[row].tolist(), top.indices[row].tolist())
            ],
        }
        for row, f in enumerate(files)
    ]
