"""Normalisation layers, selectable by name with `norm=`: none, batch, layer, instance, group.

BatchNorm (Ioffe & Szegedy 2015), as the lectures give it, over every dim except the channel dim 1:

    mu = mean(x),  var = mean((x - mu)^2),  x_hat = (x - mu) / sqrt(var + eps),  y = gamma * x_hat + beta
    running <- (1 - momentum) * running + momentum * batch statistic

Training uses the batch statistics, evaluation the running ones. A frozen BatchNorm uses the running
statistics even in training mode, so `.train()` on a fine-tuned model does not silently unfreeze it.
At test time BN is a per-channel affine map, so `fold_batchnorm` fuses it into the conv or linear layer
that feeds it, found by tracing the model's data flow with torch.fx. Layer norm (Ba et al. 2016),
instance norm (Ulyanov et al. 2016) and group norm (Wu & He 2018) use PyTorch's modules.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from trainlab.errors import ConfigError
from trainlab.registry import Registry

NORMS = Registry("norm")


class BatchNorm(nn.Module):
    """Batch normalisation for (N, C) or (N, C, *spatial) inputs; state_dict keys match nn.BatchNorm2d.

    `fused=True` runs the same formula through one native kernel (F.batch_norm) for speed;
    `fused=False` runs the lecture's formula op by op (`batch_norm_reference`). Tests check both.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, fused: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.fused = num_features, eps, momentum, fused
        self.frozen = False
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def freeze(self, frozen: bool = True) -> BatchNorm:
        """Use, and stop updating, the running statistics even in training mode (gamma, beta still learn)."""
        self.frozen = frozen
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training and not self.frozen
        if use_batch_stats:
            self.num_batches_tracked.add_(1)
        if self.fused:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                use_batch_stats,
                self.momentum,
                self.eps,
            )
        return batch_norm_reference(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_batch_stats,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, frozen={self.frozen}"


BatchNorm1d = BatchNorm
BatchNorm2d = BatchNorm


def batch_norm_reference(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    use_batch_stats: bool,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """The lecture's batch norm, op by op; updates the running statistics in place when training."""
    dims = [d for d in range(x.dim()) if d != 1]  # every dim but channels
    shape = [1, -1] + [1] * (x.dim() - 2)  # (1, C, 1, ...) to broadcast per channel
    if use_batch_stats:
        mu = x.mean(dims)
        var = (x - mu.view(shape)).square().mean(dims)  # biased: the variance of this batch
        with torch.no_grad():
            n = x.numel() // x.shape[1]
            # PyTorch keeps the unbiased variance, n / (n - 1) * var, in the running estimate; so do we
            running_mean.lerp_(mu, momentum)
            running_var.lerp_(var * n / max(n - 1, 1), momentum)
    else:
        mu, var = running_mean, running_var
    x_hat = (x - mu.view(shape)) / torch.sqrt(var.view(shape) + eps)
    return gamma.view(shape) * x_hat + beta.view(shape)


def freeze_batchnorm(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) every trainlab BatchNorm in `model`; returns the model."""
    for m in model.modules():
        if isinstance(m, BatchNorm):
            m.freeze(frozen)
    return model


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, (BatchNorm, nn.modules.batchnorm._BatchNorm))


FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# max(s * x + b) = s * max(x) + b for s >= 0, so a BN with no negative scale folds through a max pool
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` in which every BatchNorm fed only by a conv or linear layer (directly,
    or through a max pool when none of its scales is negative) is folded into that layer and replaced by
    nn.Identity. The copy is `model`'s own class, not a GraphModule.

    With s = gamma / sqrt(running_var + eps):  W' = s * W (per output channel),  b' = s * (b - mu) + beta.
    The pairs come from the data flow (`foldable_pairs`), so attribute-based blocks (self.conv1,
    self.bn1) fold as well as nn.Sequential ones. Modules that the eval-mode forward does not call
    (GoogLeNet's training-only auxiliary heads) are left as they are.
    """
    folded = copy.deepcopy(model).eval()
    for layer_name, bn_name in foldable_pairs(folded):
        fold_into(folded.get_submodule(layer_name), folded.get_submodule(bn_name))
        folded.set_submodule(bn_name, nn.Identity())
    return folded


class _FoldTracer(fx.Tracer):
    """Keeps trainlab's BatchNorm a single call in the graph, like torch's own layers."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return is_batchnorm(m) or super().is_leaf_module(m, qualified_name)


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) qualified names such that the BN's only input is the layer's output and that
    output goes nowhere else (not into a residual shortcut, say), found by tracing `forward` with torch.fx.

    A forward that fx cannot trace (Python control flow on tensor values, for one) falls back to its
    children, each traced on its own: pairs inside a child are still found, a pair split across two
    children is not. A Linear is assumed to see (N, features): the only shape at which BN's channel
    dim 1 is the linear layer's output dim.
    """
    return traced_pairs(model, "", shared_modules(model))


def traced_pairs(module: nn.Module, prefix: str, shared: set[int]) -> list[tuple[str, str]]:
    """`foldable_pairs` of `module`, named from the root model by `prefix`; `shared`: `shared_modules`."""
    try:
        graph = _FoldTracer().trace(module)
    except Exception:  # tracing runs arbitrary forward code, which can fail in any way
        return [
            pair
            for name, child in module.named_children()
            for pair in traced_pairs(child, f"{prefix}{name}.", shared)
        ]
    modules = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def sole_call(node: Any, types: tuple[type, ...]) -> nn.Module | None:
        """The module `node` calls if its type is one of `types` (exactly: a subclass may compute
        something else), it is called nowhere else, on one input, and is not shared."""
        if not isinstance(node, fx.Node) or node.op != "call_module" or calls[node.target] != 1:
            return None
        m = modules[node.target]
        ok = type(m) in types and len(node.args) == 1 and not node.kwargs and id(m) not in shared
        return m if ok else None

    pairs = []
    for node in graph.nodes:
        bn = sole_call(node, (BatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
        if bn is None or bn.running_mean is None:  # without running statistics BN is not affine
            continue
        source = node.args[0]
        if sole_call(source, MAX_POOLS) and len(source.users) == 1:
            if (batchnorm_affine(bn)[0] < 0).any():
                continue
            source = source.args[0]
        layer = sole_call(source, FOLDABLE)
        if layer is not None and len(source.users) == 1 and layer.weight.shape[0] == bn.running_mean.numel():
            pairs.append((prefix + source.target, prefix + node.target))
    return pairs


def shared_modules(model: nn.Module) -> set[int]:
    """ids of modules registered under more than one name, or holding a parameter that another module
    also holds (tied weights): folding one use in place would change the others."""
    module_names = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    param_names = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return {
        id(m)
        for m in model.modules()
        if module_names[id(m)] > 1 or any(param_names[id(p)] > 1 for p in m.parameters(recurse=False))
    }


def batchnorm_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """BN at test time as y = scale * x + shift per channel, in float64."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - scale * mean


def fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold `bn`'s eval-mode affine map into `layer`'s weight and bias, in float64 then back."""
    scale, shift = batchnorm_affine(bn)  # (C_out,)
    w = layer.weight.double()
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    layer.weight.copy_(w * scale.view(-1, *([1] * (w.dim() - 1))))
    new_bias = scale * bias + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
    else:
        layer.bias.copy_(new_bias)


@NORMS.register("none")
def no_norm(num_features: int, dim: int = 2) -> nn.Module:
    return nn.Identity()


@NORMS.register("batch", aliases=("bn", "batchnorm"))
def batch_norm(num_features: int, dim: int = 2, **options: Any) -> nn.Module:
    """trainlab's BatchNorm; the same module serves dim=1 (after linear) and dim=2 (after conv)."""
    return BatchNorm(num_features, **options)


@NORMS.register("layer", aliases=("ln", "layernorm"))
def layer_norm(num_features: int, dim: int = 2, eps: float = 1e-5) -> nn.Module:
    """Per example over all features; for (N, C, H, W): GroupNorm with one group (per-channel affine)."""
    return nn.GroupNorm(1, num_features, eps=eps) if dim == 2 else nn.LayerNorm(num_features, eps=eps)


@NORMS.register("instance", aliases=("in", "instancenorm"))
def instance_norm(num_features: int, dim: int = 2, eps: float = 1e-5) -> nn.Module:
    """Per example and channel over H, W; needs spatial dims, so it is not defined after a linear layer."""
    if dim != 2:
        raise ConfigError("norm 'instance' needs a spatial input (dim=2, after a conv), not dim=1")
    return nn.InstanceNorm2d(num_features, eps=eps, affine=True)


@NORMS.register("group", aliases=("gn", "groupnorm"))
def group_norm(num_features: int, dim: int = 2, groups: int = 32, eps: float = 1e-5) -> nn.Module:
    """Per example over groups of channels; `groups` (32, Wu & He 2018) is lowered to the largest divisor
    of num_features that is not above it."""
    groups = max(g for g in range(1, min(groups, num_features) + 1) if num_features % g == 0)
    return nn.GroupNorm(groups, num_features, eps=eps)


def create_norm(name: str | None, num_features: int, dim: int = 2, **options: Any) -> nn.Module:
    """A normalisation layer for `num_features` channels; dim=2 after a conv, dim=1 after a linear layer."""
    if dim not in (1, 2):
        raise ConfigError(
            f"norm dim={dim} is not valid (expected 1, after a linear layer, or 2, after a conv)"
        )
    factory = NORMS.get(name or "none")
    try:
        return factory(num_features, dim=dim, **options)
    except TypeError as e:
        raise ConfigError(f"bad options {options} for norm {name!r}: {e}") from None


def list_norms() -> list[str]:
    return NORMS.list()
