"""What `trainlab train --set ensemble.members=M` changes in the run pipeline (trainlab/run.py), and what
it writes: the run directory of an independent ensemble holds

    members/member-K.safetensors   each member as a model file (the schema of model.safetensors)
    ensemble.json                  the manifest (trainlab.ensemble.manifest), so the run is an ensemble

and no model.safetensors: `trainlab eval` and `trainlab predict` read the members through ensemble.json.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainlab.config import Config
from trainlab.data.splits import Loaders
from trainlab.ensemble.combine import (
    accuracy_by_size,
    calibrated_nll,
    combine,
    deep_ensemble_equivalent,
    member_disagreement,
    nll_by_size,
)
from trainlab.ensemble.manifest import write_manifest
from trainlab.ensemble.members import (
    EnsembleTask,
    MemberAugment,
    MemberBatches,
    MemberTransform,
    StackedMembers,
    check_ensemble_config,
    member_seeds,
)
from trainlab.inference import Predictor
from trainlab.models import model_from_config
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.tasks.base import Task
from trainlab.training.checkpoint import prefixed, save_checkpoint
from trainlab.training.trainer import Trainer

MEMBERS_DIR = "members"


@dataclass
class IndependentEnsemble:
    """The pipeline's model, task, training loader, augmentation and transform, for M members."""

    cfg: Config
    seeds: list[int]
    model: StackedMembers
    task: EnsembleTask
    loader: MemberBatches
    augment: MemberAugment
    transform: MemberTransform
    val_accuracy: list[float | None] = field(default_factory=list)
    val_outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # the members' (N, M, K) on validation

    def weigh_members(self, trainer: Trainer, val_loader: Any) -> None:
        """Each member's validation accuracy (recorded in ensemble.json): the weights of "weighted". The
        members' validation outputs are kept for summary's calibrated NLL."""
        if not len(val_loader):
            self.val_accuracy = [None] * len(self.seeds)
            return
        self.val_outputs = member_predictor(trainer, self.task.task).run(val_loader)
        outputs, labels = self.val_outputs  # (N, M, K)
        self.val_accuracy = (outputs.argmax(2) == labels[:, None]).double().mean(0).tolist()
        if self.task.rule == "weighted":
            self.task.weights = torch.tensor(self.val_accuracy, device=outputs.device)

    def summary(self, trainer: Trainer, test_loader: Any) -> dict[str, Any]:
        """The members on the test split: each one's accuracy, how often they disagree (Fort et al.
        2019), the NLL of the first k members' mean-probability ensemble, and the deep-ensemble
        equivalent of the combined prediction (Ashukha et al. 2020)."""
        summary = {
            "ensemble_members": len(self.seeds),
            "ensemble_engine": self.model.engine,
            "ensemble_combine": self.task.rule,
            "member_seeds": self.seeds,
            "member_val_accuracy": self.val_accuracy,
        }
        if test_loader is None:
            return summary
        outputs, labels = member_predictor(trainer, self.task.task).run(test_loader)  # (N, M, K)
        val = self.val_outputs  # from weigh_members, after the same training
        return {**summary, **member_summary(outputs, labels, self.task.rule, self.task.weights, val)}

    def write(self, run_dir: Path, trainer: Trainer, meta: dict, fixed_tensors: dict) -> None:
        """RUN/members/member-K.safetensors and RUN/ensemble.json."""
        member_cfg = copy.deepcopy(meta["config"])
        member_cfg["ensemble"]["members"] = 1  # a member file builds one member
        entries = []
        for k, (member, seed) in enumerate(zip(trainer.eval_model.member_modules(), self.seeds)):
            path = Path(MEMBERS_DIR) / f"member-{k}.safetensors"
            tensors = {**prefixed("model", member.state_dict()), **fixed_tensors}
            save_checkpoint(run_dir / path, tensors, {**meta, "config": member_cfg, "member_seed": seed})
            entries.append({"path": str(path), "seed": seed, "val_accuracy": self.val_accuracy[k]})
        config = meta["config"]
        write_manifest(
            run_dir, entries, self.task.rule, meta["classes"], config["data"]["dataset"], meta["image_shape"]
        )


def member_summary(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    rule: str,
    weights: torch.Tensor | None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """What summary.json and `trainlab eval` report of member outputs (N, M, K) on labelled data; with
    `val` = (member outputs, labels) of the validation split, also the calibrated (temperature-scaled)
    NLL curve and deep-ensemble equivalent, which Ashukha et al. (2020) recommend over the plain ones."""
    accuracy = (outputs.argmax(2) == labels[:, None]).double().mean(0).tolist()
    curve = nll_by_size(outputs, labels)
    combined = combine(outputs, rule, weights)
    nll = float(torch.nn.functional.cross_entropy(combined, labels))
    summary = {
        "member_test_accuracy": accuracy,
        "member_test_accuracy_mean": float(np.mean(accuracy)),
        "member_disagreement": member_disagreement(outputs),
        "ensemble_nll_by_members": curve,
        "ensemble_accuracy_by_members": accuracy_by_size(outputs, labels),
        "deep_ensemble_equivalent": deep_ensemble_equivalent(nll, curve),
    }
    if val is not None and len(val[1]):
        curve_ts = nll_by_size(outputs, labels, val)
        nll_ts = calibrated_nll(combined, labels, (combine(val[0], rule, weights), val[1]))
        summary |= {"ensemble_nll_ts_by_members": curve_ts,
                    "deep_ensemble_equivalent_ts": deep_ensemble_equivalent(nll_ts, curve_ts)}  # fmt: skip
    return summary


def member_predictor(trainer: Trainer, task: Task) -> Predictor:
    """The trainer's inference path, but with the members' outputs (B, M, K) left uncombined."""
    predictor = trainer.predictor()
    return Predictor(predictor.model, task, predictor.transform, predictor.tta, predictor.bf16,
                     predictor.channels_last)  # fmt: skip


def build_member(
    cfg: Config, seed: int, input_shape: tuple, num_classes: int, fit_batch, device
) -> nn.Module:
    """One member as run_pipeline builds a run's model: seeded with the member's seed, then initialised
    (with the data-dependent initialisers on the preprocessed `fit_batch`)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = model_from_config(cfg, input_shape, num_classes).to(device)
    if cfg.model.init and INITIALIZERS.meta(cfg.model.init).get("needs_data"):
        init_model(model, cfg.model.init, batch=fit_batch, **cfg.model.init_options)
    return model


def independent_ensemble(
    cfg: Config, loaders: Loaders, standardizer: Any, task: Task, num_classes: int, device: torch.device
) -> IndependentEnsemble:
    """The M members of `cfg` (seeds train.seed + 0..M-1) and everything the Trainer needs to train them
    as one model. The global RNG is reseeded with train.seed afterwards, as the run seeded it."""
    check_ensemble_config(cfg)
    seeds = member_seeds(cfg.train.seed, cfg.ensemble.members)
    input_shape = standardizer.output_shape(tuple(loaders.fit_images.shape[1:]))
    fit_batch = standardizer(loaders.fit_images[: cfg.data.batch_size])
    members = [build_member(cfg, s, input_shape, num_classes, fit_batch, device) for s in seeds]
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    return IndependentEnsemble(
        cfg,
        seeds,
        StackedMembers(members, input_shape, cfg.ensemble.engine),
        EnsembleTask(task, len(seeds), cfg.ensemble.combine),
        MemberBatches(loaders.train, seeds),
        MemberAugment(cfg.data.augment, seeds, num_classes, str(device)),
        MemberTransform(standardizer, len(input_shape) + 1),
    )


def is_stacked(model: nn.Module) -> bool:
    return isinstance(model, StackedMembers)
