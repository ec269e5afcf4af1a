"""Independent ensembles trained as one model through the one Trainer: `ensemble.members = M`.

The deck: "train several independent models; at test time combine their results". Member m has its own
seed s_m = train.seed + m for its initialisation, its data order and its augmentation draws, and shares
the train/validation split (drawn with train.seed) and the preprocessing fitted on it. The Trainer sees
one model, one task, one loader and one augmentation, each of which carries the M members:

    loader    (B, M, C, H, W) uint8 images, (B, M) labels: member m's batch from its own seeded order
    augment   member m's images through its own seeded Augment
    model     StackedMembers: (B, M, C, H, W) -> (B, M, K) member logits; in eval mode a shared
              (B, C, H, W) batch goes to every member
    task      EnsembleTask: the members' losses, each member's gradient its own; in evaluation the
              members' outputs combined by ensemble.combine into (B, K) logits (trainlab.ensemble.combine)

The loss the Trainer back-propagates is the sum of the members' mean losses, so member m's gradient is
exactly that of its own run, and one optimiser over the grouped tensors is M independent optimisers:
SGD's momentum and weight decay, and Adam's moments, are per element. A per-tensor quantity would couple
the members, so train.grad_clip (one global norm) is refused. Dropout draws from the one global
generator, so a dropout member's masks differ from its single run's (its other draws do not).

Engines: "grouped" (trainlab.ensemble.grouped: one network of grouped convolutions) when the grouped
network reproduces each member's outputs on a test batch, else "sequential": the members, one after
another, within each step. Evaluation always runs the plain members, cut out of the grouped weights,
so the run's final test evaluation and `trainlab eval` of the saved members compute the same thing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from trainlab.config import Config
from trainlab.data.augment import Augment
from trainlab.data.loader import DeviceLoader
from trainlab.ensemble.combine import combine
from trainlab.ensemble.grouped import group_members, member_state
from trainlab.errors import ConfigError
from trainlab.tasks.base import Task

SEED_SPAN = 2**32  # train.seed's range: member seeds wrap around within it


def member_seeds(seed: int, members: int) -> list[int]:
    return [(seed + m) % SEED_SPAN for m in range(members)]


def check_ensemble_config(cfg: Config) -> None:
    """What an independent ensemble cannot train with, refused in one line before any work."""
    if cfg.ensemble.members == 1:
        return
    if cfg.task.name != "classification":
        raise ConfigError(f"ensemble.members={cfg.ensemble.members}: ensembles combine class scores; "
                          f"task.name={cfg.task.name!r} is not classification")  # fmt: skip
    if cfg.train.grad_clip:
        raise ConfigError(
            f"train.grad_clip={cfg.train.grad_clip} clips one global gradient norm, which would couple "
            f"the ensemble's {cfg.ensemble.members} members; unset it (null) for an ensemble"
        )
    if cfg.train.compile:
        raise ConfigError(
            "train.compile=true: the compile warm-up does not take an ensemble's member batches yet; "
            "set train.compile=false for ensemble.members > 1"
        )
    if cfg.ensemble.snapshots:
        raise ConfigError("ensemble.members and ensemble.snapshots: choose one kind of ensemble")


class StackedMembers(nn.Module):
    """M same-architecture members as one module; `input_shape` is one sample's (C, H, W) or (k,)."""

    def __init__(self, members: list[nn.Module], input_shape: tuple[int, ...], engine: str = "auto"):
        super().__init__()
        self.count, self.input_ndim = len(members), len(input_shape) + 1
        grouped = None if engine == "sequential" else group_members(members)
        if grouped is not None and not reproduces(grouped, members, tuple(input_shape)):
            grouped = None
        if grouped is None and engine == "grouped":
            raise ConfigError(
                f"ensemble.engine='grouped': model {type(members[0]).__name__} cannot be grouped "
                "(a layer with weights other than conv2d, linear, batch or group norm, or channels "
                "mixed across members); use engine 'auto' or 'sequential'"
            )
        self.engine = "grouped" if grouped is not None else "sequential"
        if grouped is not None:
            self.grouped = grouped
            # a wide conv's weight tells channels-last apart (a 1-channel stem's is both layouts at once)
            convs = [p for p in grouped.parameters() if p.ndim == 4 and p.shape[1] > 1]
            self.__dict__["layout_probe"] = convs[-1] if convs and self.input_ndim == 4 else None
            # not submodules: the optimiser and the checkpoint see the grouped weights only
            self.__dict__["plain"] = [copy.deepcopy(m).requires_grad_(False) for m in members]
            self.__dict__["plain_version"] = None
        else:
            self.members = nn.ModuleList(members)

    def channels_last(self) -> bool:
        probe = self.layout_probe
        return probe is not None and probe.is_contiguous(memory_format=torch.channels_last)

    def member_modules(self) -> list[nn.Module]:
        """The plain members, holding the current weights (cut out of the grouped ones)."""
        if self.engine == "sequential":
            return list(self.members)
        tensors = [*self.grouped.parameters(), *self.grouped.buffers()]
        version = [(t.data_ptr(), t._version) for t in tensors]  # bumped by every in-place update
        if version != self.plain_version:
            layout = torch.channels_last if self.channels_last() else torch.contiguous_format
            for m, member in enumerate(self.plain):
                member.to(tensors[0].device).load_state_dict(member_state(self.grouped, self.count, m))
                member.to(memory_format=layout)  # as a member file loads on this device
            self.__dict__["plain_version"] = version
        return self.plain

    def train(self, mode: bool = True) -> StackedMembers:
        super().train(mode)
        if self.engine == "grouped":
            for member in self.plain:
                member.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, M, *input) or (B, *input) -> (B, M, K)
        per_member = x.ndim == self.input_ndim + 1
        if self.engine == "grouped" and self.training:
            if not per_member:
                x = x.unsqueeze(1).expand(len(x), self.count, *x.shape[1:])
            x = x.flatten(1, 2)  # (B, M C, H, W): member m's channels are the m-th block
            if self.channels_last():
                x = x.contiguous(memory_format=torch.channels_last)  # the trainer made the weights so
            return self.grouped(x).view(len(x), self.count, -1)
        members = self.member_modules() if self.engine == "grouped" else self.members
        # contiguous, as the member's own run has its batch: the same kernels, the same bits
        outputs = [member(x[:, m].contiguous() if per_member else x) for m, member in enumerate(members)]
        if isinstance(outputs[0], tuple):  # auxiliary heads in training: each head's (B, M, K)
            return tuple(torch.stack(parts, 1) for parts in zip(*outputs))
        return torch.stack(outputs, 1)


@torch.no_grad()
def reproduces(grouped: nn.Module, members: list[nn.Module], shape: tuple[int, ...]) -> bool:
    """Does the grouped network give every member's eval-mode outputs on a random batch? Grouped and
    plain kernels sum in other orders, hence the relative tolerance (1e-4, far above float32 rounding
    over these few layers, far below any wiring error, which changes outputs by O(1))."""
    param = next(members[0].parameters())
    x = torch.rand(2, *shape, device=param.device)
    grouped_copy, plain = copy.deepcopy(grouped).eval(), [copy.deepcopy(m).eval() for m in members]
    try:
        expected = torch.stack([m(x) for m in plain], 1)
        got = grouped_copy(x.unsqueeze(1).expand(2, len(members), *shape).flatten(1, 2)).view_as(expected)
    except (RuntimeError, ValueError, TypeError):
        return False
    scale = expected.abs().max().clamp_min(1e-6)
    return bool(((got - expected).abs() <= 1e-4 * scale).all())


class MemberBatches:
    """M seeded DeviceLoaders over one split, yielded together: member m's batch is exactly the batch
    its own run (seed s_m) would see. Its state is each member loader's state."""

    def __init__(self, loader: DeviceLoader, seeds: list[int]):
        if not isinstance(loader, DeviceLoader):
            raise ConfigError("ensemble.members > 1 needs an in-memory dataset (a streamed folder is not)")
        self.loaders = [
            DeviceLoader(
                loader.images, loader.targets, loader.batch_size, shuffle=True, drop_last=True, seed=s
            )
            for s in seeds
        ]

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders):
            yield torch.stack([b[0] for b in batches], 1), torch.stack([b[1] for b in batches], 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{m}.{k}": v for m, loader in enumerate(self.loaders) for k, v in loader.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for m, loader in enumerate(self.loaders):
            loader.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(f"{m}.")})


class MemberAugment:
    """Member m's images (B, M, C, H, W)[:, m] through its own Augment, seeded s_m."""

    def __init__(self, spec: Any, seeds: list[int], num_classes: int, device: str):
        self.augments = [Augment(spec, seed=s, num_classes=num_classes, device=device) for s in seeds]

    def __bool__(self) -> bool:
        return bool(self.augments[0])

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [aug(x[:, m].contiguous(), targets[:, m]) for m, aug in enumerate(self.augments)]
        return torch.stack([p[0] for p in pairs], 1), torch.stack([p[1] for p in pairs], 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{m}.generator": aug.state_dict()["generator"] for m, aug in enumerate(self.augments)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for m, aug in enumerate(self.augments):
            aug.load_state_dict({"generator": state[f"{m}.generator"]})


class MemberTransform:
    """The run's fitted preprocessing, for (B, M, C, H, W) member batches and shared (B, C, H, W) ones."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], input_ndim: int):
        self.transform, self.input_ndim = transform, input_ndim

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == self.input_ndim + 1:
            return self.transform(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return self.transform(x)


class EnsembleTask(Task):
    """A task over M members: training sums the members' losses (logged as their mean) and reports the
    members' mean training metrics; inference combines the members' outputs by `rule`."""

    def __init__(self, task: Task, members: int, rule: str = "mean_prob"):
        self.task, self.members, self.rule = task, members, rule
        self.name, self.monitor, self.higher_is_better = task.name, task.monitor, task.higher_is_better
        self.weights: torch.Tensor | None = None  # "weighted": the members' validation accuracies

    def training_loss(self, raw_outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def member(m: int) -> Any:
            return (
                tuple(r[:, m] for r in raw_outputs) if isinstance(raw_outputs, tuple) else raw_outputs[:, m]
            )

        losses = torch.stack(
            [self.task.training_loss(member(m), targets[:, m])[0] for m in range(self.members)]
        )
        total = losses.sum()
        # the value is the members' mean loss, the gradient that of their sum: each member's own
        loss = total - (total - losses.mean()).detach()
        outputs = raw_outputs[0] if isinstance(raw_outputs, tuple) else raw_outputs
        return loss, outputs

    def metric_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: torch.zeros((), device=device) for k in self.task.metric_sums(device)}

    def accumulate(self, sums: dict[str, torch.Tensor], outputs: torch.Tensor, targets: torch.Tensor) -> None:
        batch = self.task.metric_sums(outputs.device)
        self.task.accumulate(batch, outputs.flatten(0, 1), targets.flatten(0, 1))
        for k, v in batch.items():  # the trainer divides by B: the mean over members
            sums[k] += v / self.members

    def infer(self, model: nn.Module, x: torch.Tensor, tta: Any = False) -> torch.Tensor:
        member_outputs = self.task.infer(model, x, tta)  # (B, M, K)
        rule = self.rule if self.rule != "weighted" or self.weights is not None else "mean_prob"
        return combine(member_outputs, rule, self.weights)

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return self.task.evaluate(outputs, targets)

    def report(self, outputs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
        return self.task.report(outputs, targets, classes)

    def calibration(self, outputs: torch.Tensor, targets: torch.Tensor, val=None, prefix="test_") -> dict:
        return self.task.calibration(outputs, targets, val, prefix)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.task.predict(outputs)
