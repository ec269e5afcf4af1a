"""Per-layer model summary: output shape, activation memory, parameters and multiply-accumulates (MACs).

`summarize(model, (C, H, W))` runs one example through `model` with a forward hook on every leaf module
and records, per call: the output shape, the activation memory (output elements per example), the
weights and biases it owns, and its MACs. Only convolutions and linear layers have MACs:
a conv makes (C_in / groups) * kH * kW multiply-adds per output element, a linear layer `in_features`.
Norms, activations, pooling and residual additions are elementwise or comparisons and count as 0, as in
the published figures (vgg16 15.5 G, resnet18 1.82 G, resnet50 4.1 G); they would add under 1%.

A model built on the meta device (`with torch.device("meta"): ...`) is summarised without allocating
or computing anything, which is what `summary_command` does: vgg16 or resnet152 at 224x224 takes a
fraction of a second.

`inception_module_cost()` checks the lectures' Inception-module arithmetic; see docs/summary.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.factory import MODELS, create_model
from trainlab.models.googlenet import Inception

INCEPTION_COST_NAME = "inception-cost"  # the pseudo-model name that prints inception_module_cost()


@dataclass
class LayerSummary:
    name: str  # qualified module name, e.g. "features.0.0"
    type: str  # module class, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # per example, e.g. (64, 224, 224)
    memory: int  # output elements per example
    weights: int  # parameters not named "bias" (a norm's scale counts here)
    biases: int
    macs: int  # multiply-accumulates per example

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass
class Summary:
    input_shape: tuple[int, ...]
    layers: list[LayerSummary]
    total_params: int  # every parameter of the model, including layers that did not run (aux heads)
    trainable_params: int

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_memory(self) -> int:
        """Elements in the input and every layer's output, per example (forward pass only)."""
        return math.prod(self.input_shape) + sum(layer.memory for layer in self.layers)

    def to_dict(self) -> dict:
        layers = [{**asdict(layer), "params": layer.params} for layer in self.layers]
        return {
            "input_shape": list(self.input_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "total_memory": self.total_memory,
            "layers": layers,
        }

    def table(self) -> str:
        """The per-layer table with totals at the end, as `trainlab summary` prints it."""
        head = ("layer", "type", "output", "memory", "weights", "biases", "MACs")
        rows = [("input", "", shape_text(self.input_shape), f"{math.prod(self.input_shape):,}", "", "", "")]
        for layer in self.layers:
            counts = (layer.weights, layer.biases, layer.macs)
            rows.append(
                (layer.name, layer.type, shape_text(layer.output_shape), f"{layer.memory:,}")
                + tuple(f"{n:,}" if n else "" for n in counts)
            )
        weights, biases = sum(r.weights for r in self.layers), sum(r.biases for r in self.layers)
        rows.append(
            ("total", "", "", f"{self.total_memory:,}", f"{weights:,}", f"{biases:,}", f"{self.total_macs:,}")
        )
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            )
            for row in [head, *rows]
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(-1, "-" * len(lines[0]))
        lines += [
            f"parameters: {self.total_params:,} ({self.trainable_params:,} trainable)",
            f"multiply-accumulates: {self.total_macs:,} ({self.total_macs / 1e9:.2f} G) per example",
            f"activation memory: {self.total_memory:,} elements per example, forward only "
            f"({self.total_memory * 4 / 2**20:.1f} MiB in float32)",
        ]
        return "\n".join(line.rstrip() for line in lines)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call per example: convs and linear layers only (see module docstring)."""
    per_example = output[0].numel()
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return per_example * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_example * module.in_features
    return 0


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Run one example of shape `input_shape` (no batch dim) through `model` and tabulate its leaf layers.

    Runs in eval mode under no_grad on the model's device; on the meta device nothing is computed.
    Identity layers (a norm or shortcut switched off) are left out of the table.
    """
    names = {
        m: name
        for name, m in model.named_modules()
        if not list(m.children()) and not isinstance(m, nn.Identity)
    }
    layers: list[LayerSummary] = []
    counted: set[nn.Module] = set()

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
        out = output if isinstance(output, torch.Tensor) else output[0]
        weights = biases = 0
        if module not in counted:  # a module called twice owns its parameters once
            counted.add(module)
            for pname, p in module.named_parameters(recurse=False):
                biases += p.numel() if pname == "bias" else 0
                weights += 0 if pname == "bias" else p.numel()
        shape = tuple(out.shape[1:])
        layers.append(
            LayerSummary(
                names[module],
                type(module).__name__,
                shape,
                math.prod(shape),
                weights,
                biases,
                layer_macs(module, out),
            )
        )

    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu")
    handles = [m.register_forward_hook(record) for m in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Summary(tuple(input_shape), layers, total, trainable)


def parse_input_spec(spec: str) -> tuple[int, int, int]:
    """Parse "3x224x224" into (3, 224, 224); anything else raises a one-line ConfigError."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", spec)
    if not match or 0 in (shape := tuple(int(n) for n in match.groups())):
        raise ConfigError(f"bad input shape {spec!r}: expected CxHxW with positive integers, e.g. 3x224x224")
    return shape  # type: ignore[return-value]


def summarize_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> Summary:
    """Build registered model `name` for `input_shape` and summarise it, on the meta device if it can."""
    c, h, _ = input_shape
    try:
        with torch.device("meta"):
            return summarize(
                create_model(name, in_channels=c, num_classes=num_classes, image_size=h), input_shape
            )
    except RuntimeError:  # a layer without a meta kernel, or an input the model cannot take: try for real
        pass
    try:
        return summarize(
            create_model(name, in_channels=c, num_classes=num_classes, image_size=h), input_shape
        )
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(
            f"model {name!r} cannot take input {shape_text(input_shape)}: {first_line}"
        ) from error


# The lectures' example: 1x1 conv 128, 3x3 conv 192, 5x5 conv 96 and 3x3 pool on 28x28x256; the
# bottleneck version puts 1x1 convs of 64 before the 3x3 and 5x5 convs and after the pool.
INCEPTION_SLIDES_MACS = {"naive": 854_000_000, "bottleneck": 358_000_000}


def inception_module_cost(c_in: int = 256, size: int = 28) -> dict[str, dict]:
    """The cost of the lectures' naive and 1x1-bottleneck Inception modules on a size x size x c_in input.

    Per module: each conv as the slides write it ("[3x3 conv, 192]", "28x28x192x3x3x256") with its MACs,
    the total MACs, the output shape and the slides' total. On 28x28x256: naive 854,196,224 MACs (output
    depth 672); bottleneck 271,351,808 (depth 480), 3.15x fewer. The slides' 358M for the bottleneck
    module is 86,704,128 = 28x28x192x3x3x64 too high: the 3x3 conv's term counted twice.
    """
    with torch.device("meta"):
        modules = {
            "naive": Inception(c_in, 128, None, 192, None, 96, None),
            "bottleneck": Inception(c_in, 128, 64, 192, 64, 96, 64),
        }
    costs = {}
    for kind, module in modules.items():
        macs = {layer.name: layer.macs for layer in summarize(module, (c_in, size, size)).layers}
        terms = [
            {
                "conv": f"{conv.kernel_size[0]}x{conv.kernel_size[1]} conv, {conv.out_channels}",
                "formula": f"{size}x{size}x{conv.out_channels}x{conv.kernel_size[0]}x{conv.kernel_size[1]}"
                f"x{conv.in_channels}",
                "macs": macs[name],
            }
            for name, conv in module.named_modules()
            if isinstance(conv, nn.Conv2d)
        ]
        costs[kind] = {
            "terms": terms,
            "total_macs": sum(term["macs"] for term in terms),
            "output_shape": [module.out_channels, size, size],
            "slides_macs": INCEPTION_SLIDES_MACS[kind] if (c_in, size) == (256, 28) else None,
        }
    return costs


def inception_cost_text(costs: dict[str, dict]) -> str:
    """One line per conv in the slides' notation, then the total against the slides' figure."""
    lines = []
    for kind, cost in costs.items():
        lines.append(f"{kind} Inception module, output {shape_text(cost['output_shape'])}:")
        lines += [f"  [{t['conv']}]".ljust(20) + f"{t['formula']:<22}{t['macs']:>14,}" for t in cost["terms"]]
        slides = f"  (slides: {cost['slides_macs'] / 1e6:.0f}M)" if cost["slides_macs"] else ""
        lines.append(f"  {'total':<40}{cost['total_macs']:>14,}{slides}")
    naive, bottleneck = costs["naive"]["total_macs"], costs["bottleneck"]["total_macs"]
    lines.append(f"1x1 bottlenecks cut the cost {naive / bottleneck:.2f}x. The 3x3 max pools add no MACs.")
    if costs["bottleneck"]["slides_macs"]:
        slip = costs["bottleneck"]["terms"][2]  # [3x3 conv, 192] on the 64 reduced channels
        lines.append(
            f"The slides' 358M is {bottleneck + slip['macs']:,}: this total plus the [{slip['conv']}] term "
            f"({slip['formula']} = {slip['macs']:,}) a second time, a slip in their sum."
        )
    return "\n".join(lines)


def summary_command(model_name: str, input_spec: str, num_classes: int, as_json: bool = False) -> str:
    """What `trainlab summary MODEL --input CxHxW --num-classes N [--json]` prints.

    The model name "inception-cost" prints `inception_module_cost()` instead: the lectures' Inception
    module on 28x28x256, whatever the input.
    """
    if model_name.replace("_", "-") == INCEPTION_COST_NAME:
        costs = inception_module_cost()
        return json.dumps(costs, indent=2) if as_json else inception_cost_text(costs)
    shape = parse_input_spec(input_spec)
    if num_classes < 1:  # a head of 0 outputs builds, and its summary is of no model
        raise ConfigError(f"--num-classes {num_classes}: expected a number of classes >= 1")
    summary = summarize_model(MODELS.canonical(model_name), shape, num_classes)
    if as_json:
        return json.dumps(
            {"model": MODELS.canonical(model_name), "num_classes": num_classes, **summary.to_dict()}
        )
    title = f"{MODELS.canonical(model_name)} on {shape_text(shape)}, {num_classes} classes"
    return f"{title}\n\n{summary.table()}"
