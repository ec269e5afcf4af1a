"""The one inference path. The trainer's validation and final test evaluation, `trainlab eval` and
`trainlab predict` all go through a Predictor, so they see the same weights (the EMA copy when it is
on), the same preprocessing, the same precision and memory format, and the same test-time augmentation.

    predictor = Predictor(model, task, transform=standardizer, tta="flip,shift=2")
    outputs, targets = predictor.run(loader)      # float32 outputs over a whole split
    metrics = evaluate_split(predictor, loader, classes)   # {"test_loss": ..., "test_accuracy": ...}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainlab.data.preprocess import as_float01
from trainlab.data.shard import gather_rows, gather_targets
from trainlab.errors import ConfigError
from trainlab.tasks.base import Task, concat
from trainlab.tasks.tta import TTAPolicy, parse_tta

Transform = Callable[[torch.Tensor], torch.Tensor]


def uses_bf16(precision: str, device: torch.device) -> bool:
    """`train.precision`: auto is bf16 autocast on CUDA and fp32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision={precision!r}: expected auto, fp32 or bf16")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def uses_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """`train.channels_last`: None means on CUDA only."""
    return device.type == "cuda" if channels_last is None else channels_last


def model_input(x: torch.Tensor, transform: Transform | None, channels_last: bool) -> torch.Tensor:
    """Float images in [0, 1] -> the fitted preprocessing -> the model's memory format."""
    x = transform(x) if transform else x
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


@dataclass
class Predictor:
    """A model in eval mode with everything that turns raw uint8 images into its outputs."""

    model: nn.Module
    task: Task
    transform: Transform | None = None
    tta: bool | str | TTAPolicy = False  # a policy (trainlab.tasks.tta); True is "flip"
    bf16: bool = False
    channels_last: bool = False

    def __post_init__(self):
        self.tta = parse_tta(self.tta)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return model_input(as_float01(images), self.transform, self.channels_last)

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images (B, C, H, W) -> float32 outputs, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        x = self.inputs(images)  # preprocessing in float32, outside autocast, exactly as in training
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            outputs = self.task.infer(self.model, x, self.tta)
        self.model.train(was_training)
        return outputs

    def run(self, loader: Iterable) -> tuple[torch.Tensor, Any]:
        """(outputs, targets) over every batch of `loader`, joined along the first dimension. A loader
        sharded across ranks (its `block`, trainlab.data.shard) yields this rank's batches; the ranks'
        outputs are gathered in rank order, so every rank returns those of the whole split."""
        return run_batches(self.outputs, loader)


def run_batches(
    outputs_of: Callable[[torch.Tensor], torch.Tensor], loader: Iterable
) -> tuple[torch.Tensor, Any]:
    """(outputs_of(images) joined along the first dimension, targets) over every batch of `loader`: the
    loop of Predictor.run, for any predictor (an ensemble's returns every member's outputs)."""
    outputs, targets = [], []
    for images, batch_targets in loader:
        outputs.append(outputs_of(images))
        targets.append(batch_targets)
    if getattr(loader, "block", None) is not None:  # never empty: see shard_evaluation
        return gather_rows(torch.cat(outputs)), gather_targets(concat(targets))
    if not outputs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outputs), concat(targets)


def evaluate_split(
    predictor: Predictor, loader: Iterable, classes: list[str], prefix: str = "test_"
) -> dict[str, Any]:
    """A final evaluation: the task's metrics with `prefix` (test_loss, test_accuracy, ...), then the
    task's report (a classifier's confusion matrix and per-class scores)."""
    return evaluate_outputs(predictor.task, *predictor.run(loader), classes, prefix)


def evaluate_outputs(
    task: Task,
    outputs: torch.Tensor,
    targets: Any,
    classes: list[str],
    prefix: str = "test_",
    val: tuple[torch.Tensor, Any] | None = None,
) -> dict[str, Any]:
    """evaluate_split on outputs already computed (the run keeps them for its report's gallery), with
    the task's calibration metrics; `val`, the validation split's (outputs, targets), fits the
    temperature of temperature scaling."""
    metrics = {f"{prefix}{k}": v for k, v in task.evaluate(outputs, targets).items()}
    metrics.update(task.calibration(outputs, targets, val, prefix))
    return {**metrics, **(task.report(outputs, targets, classes) if len(outputs) else {})}
