"""Transfer learning: pretrained weights by name, frozen stages, discriminative learning rates and a
scheduled unfreeze, restored exactly by a resume (docs/transfer.md).

The lecture's four scenarios (small/large target dataset x similar/different data) are recipes of these
switches (trainlab/transfer_run.py). The pieces, in the order a run applies them:

- `load_pretrained(model, source)`: a trainlab run's weights (RUN_DIR/model.safetensors, or any
  .safetensors file trainlab wrote), matched by name and shape. The head's last linear layer is left
  out (it is new, for the new classes, and keeps its fresh initialisation); so are source layers the
  model does not have (stages cut by model.keep_stages). A model layer the source lacks, or one of
  another shape, is one error line listing the names.
- `Freezing`: `train.freeze` = "none", "backbone" (every stage; the head trains) or "stages:A-B"
  (1-based, inclusive, as `trainlab.models.stages.stage_names` lists them). Frozen parameters get
  requires_grad=False; frozen batch norms (`train.frozen_bn = "eval"`, the default) use and keep their
  running statistics, so a frozen stage computes exactly what it computed on the source data
  ("train": they re-estimate the statistics on the target data, their scale and shift still frozen).
- `train.unfreeze_at = E`: the frozen stages train from epoch E on (epochs count from 1, as in
  metrics.csv), their learning rate rising linearly from 0 over that epoch (a warm-up, so that the
  head's early, large gradients do not wreck the pretrained features: Howard & Ruder 2018, ULMFiT's
  gradual unfreezing).
- `optim.lr_mult = m` (fastai's `slice(lr * m, lr)`): with K stages, stage i (0-based) trains at
  lr * m^((K - i) / K) and the head at lr: early, general features move least (Yosinski et al. 2014).

What is frozen is a function of the config and the epoch, never a flag set once: `Freezing` applies it
at the start of training and of every epoch, so a resumed run (mid-epoch too) is frozen exactly as the
uninterrupted run was at that point (Lightning #21901: a resumed run silently re-froze layers).
The optimiser holds only parameters the run ever trains: with `unfreeze_at` the stages to unfreeze are
in it from the start, each in its own group, so its groups (and a checkpoint's optimiser state) are the
same before and after the unfreeze; until then they have no gradient, and torch's optimisers skip a
parameter without one (no momentum, no weight decay).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainlab.config import Config
from trainlab.errors import ConfigError, TrainlabError
from trainlab.models.stages import check_stage_count, head_name, head_parameter_names, model_stages
from trainlab.nn.norm import BatchNorm, is_batchnorm
from trainlab.training.checkpoint import load_checkpoint, short, unprefixed
from trainlab.training.optim import decay_groups
from trainlab.training.trainer import Callback


def source_file(source: Path | str) -> Path:
    """RUN_DIR/model.safetensors for a run directory, else the file itself."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            raise TrainlabError(
                f"model.pretrained={str(source)!r}: no model.safetensors (not a finished run)"
            )
    elif path.suffix != ".safetensors":
        raise TrainlabError(
            f"model.pretrained={str(source)!r}: expected a run directory or a .safetensors file"
        )
    return path


def load_pretrained(model: nn.Module, source: Path | str, exclude: set[str] = frozenset()) -> list[str]:
    """Copy the source's weights into `model` by name; returns the names loaded. Every model tensor
    but those in `exclude` must be in the source with the same shape, else one TrainlabError line
    lists the mismatches."""
    path = source_file(source)
    tensors = unprefixed("model", load_checkpoint(path)[0])
    wanted = {k: v for k, v in model.state_dict().items() if k not in exclude}
    missing = sorted(k for k in wanted if k not in tensors)
    reshaped = sorted(k for k in wanted.keys() & tensors.keys() if wanted[k].shape != tensors[k].shape)
    if missing or reshaped:
        parts = [f"missing in the source: {short(missing)}"] if missing else []
        parts += [
            "of another shape: "
            + ", ".join(f"{k} {list(tensors[k].shape)} (model {list(wanted[k].shape)})" for k in reshaped[:4])
            + (f" and {len(reshaped) - 4} more" if len(reshaped) > 4 else "")
        ] * bool(reshaped)
        raise TrainlabError(f"{path}: its weights do not fit this model: {'; '.join(parts)}")
    with torch.no_grad():
        for name, value in wanted.items():
            value.copy_(tensors[name])
    return sorted(wanted)


def frozen_stage_indices(spec: str, count: int) -> set[int]:
    """0-based indices of the stages `train.freeze` names, for a model with `count` stages."""
    if spec == "none":
        return set()
    if spec == "backbone":
        return set(range(count))
    low, _, high = spec.removeprefix("stages:").partition("-")
    first, last = int(low), int(high or low)
    if not 1 <= first <= last <= count:
        raise ConfigError(
            f"train.freeze={spec!r}: expected stages:A-B with 1 <= A <= B <= {count} (the model's stages)"
        )
    return set(range(first - 1, last))


def uses_transfer(cfg: Config) -> bool:
    return cfg.train.freeze != "none" or cfg.optim.lr_mult != 1.0 or cfg.train.unfreeze_at is not None


class Freezing(Callback):
    """Freezes `train.freeze`'s stages, unfreezes them at `train.unfreeze_at` with a one-epoch linear
    warm-up, and keeps frozen batch norms on their running statistics. Stateless: everything follows
    from the config and the trainer's epoch and step, which the checkpoint restores."""

    order = -10  # before the other callbacks look at the model

    def __init__(self, model: nn.Module, cfg: Config):
        if cfg.train.unfreeze_at is not None and cfg.train.freeze == "none":
            raise ConfigError(
                "train.unfreeze_at needs frozen stages: set train.freeze (backbone or stages:A-B)"
            )
        self.stages = model_stages(model)
        kept = cfg.model.keep_stages or len(self.stages)
        check_stage_count(model, kept, "model.keep_stages")
        self.frozen = frozen_stage_indices(cfg.train.freeze, len(self.stages))
        self.unfreeze_at, self.frozen_bn = cfg.train.unfreeze_at, cfg.train.frozen_bn
        self.eval_norms: list[nn.Module] = []

    def frozen_at(self, epoch: int) -> set[int]:
        """The stages frozen during `epoch` (1-based)."""
        thawed = self.unfreeze_at is not None and epoch >= self.unfreeze_at
        return set() if thawed else self.frozen

    def apply(self, epoch: int) -> None:
        frozen = self.frozen_at(epoch)
        for i, (_, modules) in enumerate(self.stages):
            for module in modules:
                module.requires_grad_(i not in frozen)
                for m in module.modules():
                    if isinstance(m, BatchNorm):
                        m.freeze(i in frozen and self.frozen_bn == "eval")

    def torch_batchnorms(self, epoch: int) -> list[nn.Module]:
        """torch's own batch norms in frozen stages, which only eval mode keeps on running statistics."""
        if self.frozen_bn != "eval":
            return []
        frozen = self.frozen_at(epoch)
        return [
            m
            for i, (_, modules) in enumerate(self.stages)
            if i in frozen
            for module in modules
            for m in module.modules()
            if is_batchnorm(m) and not isinstance(m, BatchNorm)
        ]

    def on_train_begin(self, trainer) -> None:
        self.apply(trainer.epoch + 1)  # after a resume: the epoch in flight

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        self.apply(epoch)
        self.eval_norms = self.torch_batchnorms(epoch)

    def on_train_batch_begin(self, trainer, step: int) -> None:
        for m in self.eval_norms:
            m.train(False)  # Trainer.train_epoch put the model in training mode
        epoch = trainer.epoch + 1
        for group in trainer.optimizer.param_groups:
            if group.get("stage_index") in self.frozen:
                group["initial_lr"] = group["base_lr"] * self.warm_up(trainer, epoch)

    def warm_up(self, trainer, epoch: int) -> float:
        """0 while frozen; from 0 to 1 over the epoch of the unfreeze, by step; then 1."""
        if self.unfreeze_at is None or epoch > self.unfreeze_at:
            return 1.0
        if epoch < self.unfreeze_at:
            return 0.0
        per_epoch = max(trainer.steps_per_epoch, 1)
        return (trainer.global_step - (epoch - 1) * per_epoch + 1) / per_epoch


def transfer_param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """The head's groups first (so the logged lr is the head's), then one pair of groups per stage that
    trains at some point (weights decayed, biases and norm parameters not), each at lr * its multiplier.
    Stages frozen for the whole run are left out."""
    stages = model_stages(model)
    frozen = frozen_stage_indices(cfg.train.freeze, len(stages))
    never = frozen if cfg.train.unfreeze_at is None else set()
    staged = {id(p) for _, modules in stages for m in modules for p in m.parameters()}
    head = [p for p in model.parameters() if id(p) not in staged]  # the head, and anything outside stages
    lr, wd, count = cfg.optim.lr, cfg.optim.weight_decay, len(stages)
    groups = decay_groups(head, wd, lr=lr, base_lr=lr, stage_index=None)
    for i, (_, modules) in enumerate(stages):
        if i in never:
            continue
        stage_lr = lr * cfg.optim.lr_mult ** ((count - i) / count)
        params = [p for m in modules for p in m.parameters()]
        groups += decay_groups(params, wd, lr=stage_lr, base_lr=stage_lr, stage_index=i)
    return [g for g in groups if g["params"]]


def prepare_transfer(model: nn.Module, cfg: Config, load: bool) -> Freezing | None:
    """Load `model.pretrained` (when `load`: a resume takes the weights from its checkpoint instead)
    and return the Freezing callback, applied for epoch 1, when the config freezes or scales stages."""
    if cfg.model.pretrained and load:
        head_name(model)
        load_pretrained(model, cfg.model.pretrained, exclude=head_parameter_names(model))
    if not uses_transfer(cfg):
        return None
    freezing = Freezing(model, cfg)
    freezing.apply(1)
    return freezing
