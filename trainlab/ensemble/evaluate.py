"""Using an ensemble directory (one holding ensemble.json): load its members, evaluate it, predict with it.

Each member goes through its own inference path (trainlab.predict.load_trained_file: its weights, its
preprocessing, its precision and test-time augmentation), then the manifest's combination rule turns
the members' outputs into one prediction. Nothing is taken from the training process: a fresh
`trainlab eval RUN` reads the files only, and reproduces summary.json's test metrics, since the run's
final evaluation took the same path (trainlab.ensemble.members).

`evaluate_directory` and `load_directory` are what `trainlab eval` and `trainlab predict` call: an
ensemble directory here, any other run directory through trainlab.predict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainlab.data.datasets import load_dataset
from trainlab.data.splits import test_loader
from trainlab.ensemble.combine import combine
from trainlab.ensemble.independent import member_summary
from trainlab.ensemble.manifest import is_ensemble, read_manifest
from trainlab.errors import DataError, TrainlabError
from trainlab.inference import Predictor, evaluate_outputs, run_batches
from trainlab.predict import (
    TrainedModel,
    check_dataset_fits,
    evaluate_run,
    load_trained,
    load_trained_file,
    validation_outputs,
)


@dataclass
class EnsemblePredictor:
    """The members' Predictors and the rule that combines their outputs; used where a Predictor is."""

    members: list[Predictor]
    rule: str = "mean_prob"
    weights: torch.Tensor | None = None

    @property
    def task(self):
        return self.members[0].task

    def member_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> each member's float32 outputs (B, M, K), by its own inference path."""
        return torch.stack([p.outputs(images) for p in self.members], 1)

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the ensemble's logits (B, K) (trainlab.ensemble.combine)."""
        return combine(self.member_outputs(images), self.rule, self.weights)

    def run_members(self, loader: Iterable) -> tuple[torch.Tensor, Any]:
        """(member outputs (N, M, K), targets) over every batch of `loader`."""
        return run_batches(self.member_outputs, loader)

    def run(self, loader: Iterable) -> tuple[torch.Tensor, Any]:
        outputs, targets = self.run_members(loader)
        return combine(outputs, self.rule, self.weights), targets


def load_members(directory: Path | str, device: str = "auto") -> tuple[dict[str, Any], list[TrainedModel]]:
    """(the manifest, each member as a TrainedModel), each member checked as any model file is, and
    against the manifest: the same classes, image shape and dataset."""
    manifest = read_manifest(directory)
    members = [load_trained_file(m["path"], device) for m in manifest["members"]]
    for entry, member in zip(manifest["members"], members):
        found = {"classes": member.classes, "image_shape": list(member.image_shape),
                 "dataset": member.config.data.dataset}  # fmt: skip
        for key, value in found.items():
            if value != manifest[key]:
                raise DataError(
                    f"{entry['path']}: {key} {value!r} differs from {manifest[key]!r} in "
                    f"{Path(directory) / 'ensemble.json'} (every member must share the ensemble's)"
                )
    return manifest, members


def ensemble_model(manifest: dict[str, Any], members: list[TrainedModel]) -> TrainedModel:
    """The members as one TrainedModel, whose predictor is an EnsemblePredictor."""
    weights = None
    if manifest["combine"] == "weighted":
        chosen = [m["weight"] if m["weight"] is not None else m["val_accuracy"] for m in manifest["members"]]
        weights = torch.tensor(chosen, dtype=torch.float32)
    predictor = EnsemblePredictor([m.predictor for m in members], manifest["combine"], weights)
    first = members[0]
    return TrainedModel(predictor, first.classes, first.image_shape, first.config, first.device)


def load_ensemble(directory: Path | str, device: str = "auto") -> TrainedModel:
    return ensemble_model(*load_members(directory, device))


def shared_split(members: list[TrainedModel]) -> bool:
    """Do the members share one train/validation split (the dataset, seed and size that draw it)? Only
    then is the validation split held out of every member, to fit the temperature on."""
    return len({(m.config.data.dataset, m.config.train.seed, m.config.data.val_size) for m in members}) == 1


def evaluate_ensemble(directory: Path | str, device: str = "auto") -> dict[str, Any]:
    """The ensemble's test metrics and calibration by the combined prediction (with a temperature
    fitted on the validation split when the members share one), and the members': each one's test
    accuracy, their disagreement, the NLL by ensemble size and the deep-ensemble equivalent."""
    manifest, members = load_members(directory, device)
    trained = ensemble_model(manifest, members)
    predictor, cfg = trained.predictor, trained.config
    data = load_dataset(cfg.data.dataset, cfg.data.memory_budget_mb)
    check_dataset_fits(trained, data, directory)
    outputs, labels = predictor.run_members(test_loader(data, cfg, trained.device))
    shared = shared_split(members)
    val_members = validation_outputs(predictor, data, cfg, trained.device, members=True) if shared else None
    val = (
        (combine(val_members[0], predictor.rule, predictor.weights), val_members[1]) if val_members else None
    )
    combined = combine(outputs, predictor.rule, predictor.weights)
    result = evaluate_outputs(predictor.task, combined, labels, trained.classes, val=val)
    extra = member_summary(outputs, labels, predictor.rule, predictor.weights, val_members)
    return {**result, **extra, "ensemble_members": len(members), "classes": trained.classes}


def evaluate_directory(run_dir: Path | str, device: str = "auto") -> dict[str, Any]:
    """`trainlab eval`: an ensemble directory's evaluation, or a run's (trainlab.predict.evaluate_run)."""
    return evaluate_ensemble(run_dir, device) if is_ensemble(run_dir) else evaluate_run(run_dir, device)


def load_directory(run_dir: Path | str, device: str = "auto") -> TrainedModel:
    """`trainlab predict`: an ensemble directory's members, or a run's model."""
    if not Path(run_dir).is_dir():
        raise TrainlabError(f"{run_dir}: not a directory (expected a run or an ensemble directory)")
    return load_ensemble(run_dir, device) if is_ensemble(run_dir) else load_trained(run_dir, device)
