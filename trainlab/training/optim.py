"""Optimisers and learning-rate schedules.

Schedules are pure functions of progress: `lr(step) = peak_lr * factor(step / total_steps)`, so a
resumed run needs only the global step to be back on the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from trainlab.config import OptimConfig, ScheduleConfig
from trainlab.errors import ConfigError
from trainlab.nn.layers import fixup_scalars
from trainlab.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, scalar_lr_scale: float = 1.0
) -> list[dict]:
    """Weight decay on weights only: biases and norm parameters (1-D tensors) are not decayed. Fixup's
    scalar biases and multipliers (Zhang et al. 2019), where the model has them, form a third group at
    lr x scalar_lr_scale: one scalar moves every unit of a layer at once."""
    scalars = {id(p) for s in fixup_scalars(model) for p in s.parameters() if p.requires_grad}
    trained = [p for p in model.parameters() if p.requires_grad and id(p) not in scalars]
    groups = decay_groups(trained, weight_decay)
    if scalars:  # only then, so that the optimiser state of every other model keeps its two groups
        params = [p for p in model.parameters() if id(p) in scalars]
        groups.append({"params": params, "weight_decay": 0.0, "lr": lr * scalar_lr_scale})
    return groups


def decay_groups(params: list[nn.Parameter], weight_decay: float, **options) -> list[dict]:
    """Two groups: the weights (ndim > 1), decayed, and the biases and norm parameters, not."""
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, **options},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, **options},
    ]


def fused(groups: list[dict]) -> bool:
    """PyTorch's fused kernels (one launch per step instead of several per tensor list) for parameters
    on CUDA, where a small model's step is bound by kernel launches. On the CPU the default
    implementation stays, so CPU results do not depend on this choice."""
    return all(p.is_cuda for group in groups for p in group["params"]) and any(g["params"] for g in groups)


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        fused=fused(groups) or None,
    )


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with weight decay added to the gradient (L2 in the loss, coupled to the adaptive scaling)."""
    return torch.optim.Adam(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused(groups) or None
    )


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW: weight decay decoupled from the gradient (Loshchilov & Hutter 2019)."""
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused(groups) or None
    )


def create_optimizer(
    model: nn.Module, cfg: OptimConfig, groups: list[dict] | None = None
) -> torch.optim.Optimizer:
    """The optimiser over `groups` (default: param_groups(model, ...), the trainable parameters)."""
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {cfg.lr}")
    if cfg.fixup_scalar_lr_scale < 0:
        raise ConfigError(f"optim.fixup_scalar_lr_scale must be >= 0, got {cfg.fixup_scalar_lr_scale}")
    if groups is None:
        groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.fixup_scalar_lr_scale)
    return OPTIMIZERS.create(cfg.name, groups, cfg)


@SCHEDULES.register("constant")
def constant(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    return lambda t: 1.0


@SCHEDULES.register("step")
def step(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    """Multiply by gamma every `step_epochs` epochs."""
    return lambda t: cfg.gamma ** math.floor(t * epochs / cfg.step_epochs)


@SCHEDULES.register("cosine")
def cosine(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    """Linear warmup from 0 over `warmup_epochs`, then half a cosine down to `final_lr_frac`."""
    warm = min(cfg.warmup_epochs / epochs, 1.0) if epochs else 0.0

    def factor(t: float) -> float:
        if t < warm:
            return t / warm
        progress = (t - warm) / max(1.0 - warm, 1e-12)
        return cfg.final_lr_frac + (1 - cfg.final_lr_frac) * 0.5 * (
            1 + math.cos(math.pi * min(progress, 1.0))
        )

    return factor


@SCHEDULES.register("onecycle")
def onecycle(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    """Smith's one-cycle, piecewise linear: rise from 10% to the peak over `pct_start`, then fall to
    `final_lr_frac`."""

    def factor(t: float) -> float:
        if t < cfg.pct_start:
            return 0.1 + 0.9 * t / cfg.pct_start
        progress = (t - cfg.pct_start) / max(1.0 - cfg.pct_start, 1e-12)
        return 1.0 + (cfg.final_lr_frac - 1.0) * min(progress, 1.0)

    return factor


@SCHEDULES.register("cyclic_cosine")
def cyclic_cosine(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    """Huang et al. 2017 (Snapshot Ensembles), with M = `cycles` restarts over training:
    factor(t) = 1/2 (1 + cos(pi * frac(M t))), from the peak down to 0 in each cycle, then back up."""
    cycles = cfg.cycles or 1

    def factor(t: float) -> float:
        u = t * cycles
        return 0.5 * (1 + math.cos(math.pi * (u - cycle_of(u))))

    return factor


def cycle_of(u: float) -> int:
    """floor(u), robust to u = k * n / n landing a rounding below the whole number k."""
    return math.floor(u + 1e-9)


SWA_CYCLIC_FLOOR = 0.01  # Izmailov et al. 2018: cyclic SWA goes from alpha_1 to alpha_2 = alpha_1 / 100


def swa_schedule(
    base: Callable[[float], float], epochs: int, start: int, factor: float | None, anneal: str
) -> Callable[[float], float]:
    """`base` until epoch `start` (1-based) begins, then the SWA learning rate (Izmailov et al. 2018,
    Averaging Weights Leads to Wider Optima): `factor` x the peak, constant, or with anneal="cyclic"
    falling linearly to SWA_CYCLIC_FLOOR x that in each epoch. factor None keeps `base` throughout."""
    if factor is None:
        return base

    def scheduled(t: float) -> float:
        e = t * epochs  # epochs done, fractional
        if cycle_of(e) < start - 1:
            return base(t)
        if anneal == "cyclic":
            return factor * (1 - (1 - SWA_CYCLIC_FLOOR) * (e - cycle_of(e)))
        return factor

    return scheduled


def create_schedule(cfg: ScheduleConfig, epochs: int) -> Callable[[float], float]:
    """factor(t) for training progress t in [0, 1]."""
    return SCHEDULES.create(cfg.name, cfg, epochs)
