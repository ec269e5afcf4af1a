"""M same-architecture members as one network of grouped layers, so that one forward and backward pass
trains them all.

Member m's channels are the m-th block of every layer's channels: a conv with C_in -> C_out channels
becomes one conv with M C_in -> M C_out channels and `groups` x M groups (its weight is the members'
weights concatenated), so that block m of the output sees only block m of the input; batch norm over
M C channels is each member's own per-channel batch norm (statistics per channel, so per member), and
group norm with M G groups is each member's G groups; a linear layer becomes M matrices applied to
the M blocks of its input (`GroupedLinear`). Elementwise layers, pooling and flattening act on each
block as they did on the member (a flattened (B, M C, H, W) tensor holds member m's C H W features as
its m-th contiguous block). The same arithmetic as M separate networks, in fewer, larger kernels.

torch.func.stack_module_state + vmap computes the same thing; on the CPU its batching rule for conv2d
was slower than M separate passes (bench/ensemble_speed.py, docs/ensembles.md), grouped layers faster.
A model with any other layer that holds weights cannot be grouped (`group_members` returns None), and
a grouped model is accepted only when it reproduces every member's outputs (trainlab.ensemble.members).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainlab.nn.norm import BatchNorm

NORM_TYPES = (BatchNorm, nn.BatchNorm1d, nn.BatchNorm2d)


class GroupedLinear(nn.Module):
    """M linear maps, member m's on block m of the input: (B, M in) -> (B, M out). The bias is one flat
    (M out,) vector, so that the optimiser's no-decay rule for 1-D tensors still applies to it."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))  # (M, out, in)
        self.bias = nn.Parameter(torch.zeros(members * out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, M in) -> (B, M out)
        y = torch.einsum("bmi,moi->bmo", x.view(len(x), self.members, self.in_features), self.weight)
        y = y.reshape(len(x), self.members * self.out_features)
        return y + self.bias if self.bias is not None else y


def cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])


@torch.no_grad()
def grouped_layer(layers: list[nn.Module]) -> nn.Module | None:
    """One grouped layer doing the work of the members' `layers` (one per member, the same type and
    shape), holding their weights; None for a layer type that cannot be grouped."""
    first, m = layers[0], len(layers)
    if not any(True for _ in first.parameters(recurse=False)) and not any(True for _ in first.buffers(False)):
        return copy.deepcopy(first)  # elementwise, pooling, flattening: the same on every block
    if type(first) is nn.Conv2d and first.padding_mode == "zeros":
        channels = (m * first.in_channels, m * first.out_channels)
        layer = nn.Conv2d(
            *channels,
            first.kernel_size,
            first.stride,
            first.padding,
            first.dilation,
            m * first.groups,
            first.bias is not None,
        )
        layer.weight.copy_(cat([c.weight for c in layers]))
        if first.bias is not None:
            layer.bias.copy_(cat([c.bias for c in layers]))
        return layer
    if type(first) is nn.Linear:
        layer = GroupedLinear(m, first.in_features, first.out_features, first.bias is not None)
        layer.weight.copy_(torch.stack([lin.weight for lin in layers]))
        if first.bias is not None:
            layer.bias.copy_(cat([lin.bias for lin in layers]))
        return layer
    if isinstance(first, NORM_TYPES) and first.running_mean is not None:
        layer = copy.deepcopy(first)
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(layer, name)
            tensor.data = cat([getattr(n, name) for n in layers])
        layer.num_features = m * first.num_features
        return layer
    if type(first) is nn.GroupNorm and first.affine:
        layer = nn.GroupNorm(m * first.num_groups, m * first.num_channels, first.eps)
        layer.weight.copy_(cat([g.weight for g in layers]))
        layer.bias.copy_(cat([g.bias for g in layers]))
        return layer
    return None


def group_members(members: list[nn.Module]) -> nn.Module | None:
    """A copy of members[0] whose every layer is the grouped layer of the members' layers, or None when a
    layer cannot be grouped. Layers holding weights must be leaves (the members' own forward does the
    wiring, which the grouping leaves alone)."""
    grouped = copy.deepcopy(members[0])
    named = [dict(m.named_modules()) for m in members]
    for name, module in list(grouped.named_modules()):
        if any(True for _ in module.children()):
            if any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(False)
            ):
                return None  # a container with weights of its own: its forward uses them unknown ways
            continue
        layer = grouped_layer([n[name] for n in named])
        if layer is None:
            return None
        set_module(grouped, name, layer)
    return grouped


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def member_state(grouped: nn.Module, members: int, index: int) -> dict[str, torch.Tensor]:
    """Member `index`'s state_dict, cut out of a grouped model's."""
    state = {}
    for name, module in grouped.named_modules():
        prefix = f"{name}." if name else ""
        for key, tensor in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            if isinstance(module, GroupedLinear) and key == "weight":
                part = tensor[index]
            elif tensor.ndim == 0:  # num_batches_tracked: the same count for every member
                part = tensor
            else:
                part = tensor.chunk(members)[index]
            state[prefix + key] = part.detach().clone()
    return state
