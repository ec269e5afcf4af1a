"""Using a trained model: load a run, evaluate it on the test set, predict new image files.

A new image goes through exactly the training conversion: the dataset's channel count and size
(formats.load_image), then the preprocessing statistics stored in the run's model.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.config import Config
from trainlab.data import formats
from trainlab.data.datasets import load_dataset
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import Standardizer
from trainlab.errors import TrainlabError
from trainlab.train.checkpoint import load_checkpoint, unprefixed
from trainlab.train.metrics import confusion_matrix, per_class_scores
from trainlab.train.run import build_model


@dataclass
class TrainedModel:
    model: torch.nn.Module
    standardizer: Standardizer
    classes: list[str]
    image_shape: tuple[int, int, int]
    config: Config

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> class probabilities (B, K)."""
        x = self.standardizer(images)  # uint8 -> [0, 1] -> the fitted preprocessing
        return torch.softmax(self.model(x).float(), dim=1)


def load_trained(run_dir: Path | str) -> TrainedModel:
    """The evaluated weights of a finished run (RUN_DIR/model.safetensors)."""
    path = Path(run_dir) / "model.safetensors"
    if not path.exists():
        raise TrainlabError(
            f"{run_dir}: no model.safetensors (expected the directory of a finished `trainlab train` run)"
        )
    tensors, meta = load_checkpoint(path)
    cfg = Config.from_dict(meta["config"])
    shape = tuple(meta["image_shape"])
    model = build_model(cfg, shape, len(meta["classes"]))
    model.load_state_dict(unprefixed("model", tensors))
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options)
    standardizer.load_state_dict(unprefixed("preprocess", tensors))
    return TrainedModel(model.eval(), standardizer, meta["classes"], shape, cfg)


def evaluate_run(run_dir: Path | str, batch_size: int = 1024) -> dict[str, Any]:
    """Test accuracy, confusion matrix and per-class precision / recall / F1."""
    trained = load_trained(run_dir)
    data = load_dataset(trained.config.data.dataset)
    predictions = []
    for images, _ in DeviceLoader(data.test_images, data.test_labels, batch_size):
        predictions.append(trained.probabilities(images).argmax(1))
    predictions = torch.cat(predictions)
    confusion = confusion_matrix(predictions, data.test_labels, len(trained.classes))
    return {
        "test_accuracy": float((predictions == data.test_labels).float().mean()),
        "classes": trained.classes,
        "confusion_matrix": confusion.tolist(),
        **per_class_scores(confusion),
    }


def predict_files(trained: TrainedModel, files: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """[{"file", "predictions": [{"label", "index", "probability"}, ...]}] for each image file."""
    channels, height, width = trained.image_shape
    images = torch.stack(
        [torch.from_numpy(formats.load_image(Path(f), channels, (height, width))) for f in files]
    )
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
