"""What `ensemble.snapshots=M` (or `--recipe snapshot`) adds to a run: a snapshot ensemble (Huang et al.
2017, Snapshot Ensembles: Train 1, Get M for Free). The cyclic cosine schedule restarts M times and
trainlab.training.averaging.SnapshotEnsemble keeps the model at the end of each cycle; here the M
snapshots become the run's evaluated model, combined by `ensemble.combine` (mean_prob by default;
"weighted" weighs each by its validation accuracy), and the run directory an ensemble:

    snapshots/snapshot-K.safetensors   each snapshot as a model file (the schema of model.safetensors)
    ensemble.json                      the manifest (trainlab.ensemble.manifest)
    model.safetensors                  the last snapshot, a single model (for export)

The final evaluation goes through the same EnsemblePredictor as `trainlab eval` on the directory, so
eval reproduces summary.json's test metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainlab.data.splits import Loaders
from trainlab.ensemble.evaluate import EnsemblePredictor
from trainlab.ensemble.independent import member_summary
from trainlab.ensemble.manifest import write_manifest
from trainlab.training.averaging import SnapshotEnsemble, averaged_model
from trainlab.training.checkpoint import prefixed, save_checkpoint
from trainlab.training.trainer import Trainer

SNAPSHOTS_DIR = "snapshots"


def snapshot_predictor(
    trainer: Trainer, snapshots: SnapshotEnsemble, rule: str, loaders: Loaders
) -> EnsemblePredictor:
    """The snapshots combined by `rule`, each through the run's own inference path; "weighted" weighs
    them by their validation accuracy (trainlab.ensemble.combine)."""
    models = [averaged_model(trainer.model, taken["state"]) for taken in snapshots.taken]
    predictor = EnsemblePredictor([trainer.predictor(m) for m in models], rule)
    if rule == "weighted":
        predictor.weights = torch.tensor(val_accuracy(predictor, loaders) or [1.0] * len(models))
    return predictor


def val_accuracy(predictor: EnsemblePredictor, loaders: Loaders) -> list[float] | None:
    """Each snapshot's validation accuracy, None without a validation split."""
    if not len(loaders.val) or predictor.task.name != "classification":
        return None
    outputs, labels = predictor.run_members(loaders.val)  # (N, M, K)
    return (outputs.argmax(2) == labels[:, None]).double().mean(0).tolist()


def snapshot_summary(predictor: EnsemblePredictor, loaders: Loaders) -> dict[str, Any]:
    """Each snapshot's validation accuracy (recorded in ensemble.json) and, on the test split, each
    one's accuracy, their disagreement and the deep-ensemble equivalent (trainlab.ensemble)."""
    summary = {"snapshots": len(predictor.members), "member_val_accuracy": val_accuracy(predictor, loaders)}
    if loaders.test is not None and predictor.task.name == "classification":
        outputs, labels = predictor.run_members(loaders.test)
        val = predictor.run_members(loaders.val) if len(loaders.val) else None
        summary.update(member_summary(outputs, labels, predictor.rule, predictor.weights, val))
    return summary


def write_snapshots(
    run_dir: Path, predictor: EnsemblePredictor, summary: dict[str, Any], meta: dict, fixed_tensors: dict
) -> None:
    """RUN/snapshots/snapshot-K.safetensors and RUN/ensemble.json."""
    accuracy = summary.get("member_val_accuracy") or [None] * len(predictor.members)
    entries = []
    for k, (member, val_accuracy) in enumerate(zip(predictor.members, accuracy), start=1):
        path = Path(SNAPSHOTS_DIR) / f"snapshot-{k}.safetensors"
        save_checkpoint(
            run_dir / path, {**prefixed("model", member.model.state_dict()), **fixed_tensors}, meta
        )
        entries.append(
            {"path": str(path), "seed": meta["config"]["train"]["seed"], "val_accuracy": val_accuracy}
        )
    dataset = meta["config"]["data"]["dataset"]
    write_manifest(run_dir, entries, predictor.rule, meta["classes"], dataset, meta["image_shape"])
