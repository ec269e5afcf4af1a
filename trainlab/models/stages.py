"""A network's named stages and its head, for transfer learning (docs/transfer.md).

Yosinski et al. 2014 ("How transferable are features in deep neural networks?") cut a trained network
after its first k layers and train the rest anew: early layers hold general features (edges, blobs),
later ones features specific to the source task. Here the unit is a *stage*, named as `trainlab summary`
names its layers (a stage's name is the prefix of its layers' names):

- the stages are the model's top-level children other than its head, in order, with a container of
  stages (`groups`, `stages`, `features`, an nn.Sequential) contributing each of its children, and a
  module without parameters (an activation, a pooling) joining the stage before it. SpeedNet:
  `stem` (with `stem_act`), `groups.0`, `groups.1`, `groups.2`; ResNet: `stem`, `stages.0` ... `stages.3`;
  the default CNN: one stage per conv block of `features`;
- the head is the model's `head` (or `classifier`), and its last nn.Linear is the layer that a transfer
  replaces for the new classes.

`cut_after(model, k, input_shape)` keeps the first k stages: the later ones become nn.Identity (so the
kept layers keep their names, and a source run's weights load by name), and the head's last linear
layer is rebuilt for the width that stage k puts out (found by one forward of a zero image), freshly
initialised. Only models whose head pools globally (`head`) can be cut.
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.errors import ConfigError

STAGE_CONTAINERS = ("groups", "stages", "features")
HEADS = ("head", "classifier")


def head_name(model: nn.Module) -> str:
    for name in HEADS:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ConfigError(
        f"model {type(model).__name__} has no head (expected an attribute {' or '.join(HEADS)}) for transfer"
    )


def model_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """[(stage name, its modules)] in forward order; the head is not a stage."""
    head = head_name(model)
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name == head:
            continue
        if name in STAGE_CONTAINERS and isinstance(child, nn.Sequential):
            units += [(f"{name}.{i}", m) for i, m in enumerate(child)]
        else:
            units.append((name, child))
    stages: list[tuple[str, list[nn.Module]]] = []
    waiting: list[nn.Module] = []  # parameterless modules before the first stage
    for name, module in units:
        if next(module.parameters(), None) is None and stages:
            stages[-1][1].append(module)
        elif next(module.parameters(), None) is None:
            waiting.append(module)
        else:
            stages.append((name, [*waiting, module]))
            waiting = []
    if not stages:
        raise ConfigError(f"model {type(model).__name__} has no stage with parameters before its head")
    return stages


def stage_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model_stages(model)]


def head_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(its parent, its attribute name, the layer): the head's last nn.Linear, the classifier layer."""
    name = head_name(model)
    head = getattr(model, name)
    if isinstance(head, nn.Linear):
        return model, name, head
    linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"model {type(model).__name__}: its {name} has no nn.Linear to replace")
    path, layer = linears[-1]
    parent_path, _, attr = path.rpartition(".")
    return (head.get_submodule(parent_path) if parent_path else head), attr, layer


def head_parameter_names(model: nn.Module) -> set[str]:
    """The state_dict names of the head's last linear layer (the layer a transfer initialises fresh)."""
    parent, attr, layer = head_linear(model)
    prefix = next(n for n, m in model.named_modules() if m is layer)
    return {f"{prefix}.{k}" for k in layer.state_dict()}


def check_stage_count(model: nn.Module, k: int, key: str) -> list[str]:
    names = stage_names(model)
    if not 1 <= k <= len(names):
        raise ConfigError(
            f"{key}={k}: model {type(model).__name__} has {len(names)} stages ({', '.join(names)}); "
            f"expected 1..{len(names)}"
        )
    return names


def cut_after(model: nn.Module, k: int, input_shape: tuple[int, ...]) -> nn.Module:
    """`model` (changed in place) with only its first k stages and a fresh head layer for their width."""
    names = check_stage_count(model, k, "model.keep_stages")
    if k == len(names):
        return model
    if head_name(model) != "head":
        raise ConfigError(
            f"model.keep_stages={k}: model {type(model).__name__}'s classifier does not pool globally, "
            "so it cannot follow an earlier stage (models with a pooling head: speednet, cnn, resnet*)"
        )
    for name in names[k:]:
        parent, _, attr = name.rpartition(".")
        container = model.get_submodule(parent) if parent else model
        if parent:
            container[int(attr)] = nn.Identity()
        else:
            setattr(model, attr, nn.Identity())
    parent, attr, layer = head_linear(model)
    width = head_input_width(model, input_shape)
    device = layer.weight.device
    setattr(parent, attr, nn.Linear(width, layer.out_features, bias=layer.bias is not None, device=device))
    return model


def head_input_width(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The features the head receives, from one forward of a zero image (on the meta device: none)."""
    seen: list[int] = []

    def capture(module: nn.Module, args: tuple) -> None:
        seen.append(args[0].shape[1])
        raise StopForward

    param = next(model.parameters())
    handle = model.head.register_forward_pre_hook(capture)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=param.device))
    except StopForward:
        pass
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]


class StopForward(Exception):
    """Raised by the probe once the head's input is seen: the rest of the forward is not needed."""
