"""Weight initialisation schemes, registered by name: `init_model(model, scheme, **options)`.

Every scheme sets the weights of each conv and linear layer (norm layers keep gamma = 1, beta = 0). For a
weight of shape (out, in, *kernel), fan_in = in * prod(kernel) and fan_out = out * prod(kernel), so a 3x3
conv from 64 channels has fan_in = 3 * 3 * 64.

    zeros, constant       every unit computes the same thing: the symmetry problem, kept to show it
    normal, small_random  N(0, std^2); the lectures' W = 0.01 * randn
    uniform               U(-limit, limit)
    xavier_*              Var(W) = gain^2 * 2 / (fan_in + fan_out)             (Glorot & Bengio 2010)
    kaiming_*             Var(W) = gain^2 / fan, gain^2 = 2 / (1 + a^2) for ReLU (He et al. 2015)
    orthogonal            W^T W = I (flattened to (out, fan_in))                (Saxe et al. 2013)
    lsuv                  orthogonal, then per layer W /= sqrt(Var(out)) on a real batch until
                          |Var(out) - 1| < tol                                   (Mishkin & Matas 2015)
    data_dependent        per output channel: zero mean, unit variance on a real batch
                          (Kraehenbuehl et al. 2015, within-layer initialisation)
    fixup                 residual nets without norm: branch layers x L^(-1/(2m-2)), last branch layer
                          and classifier 0, scalar multipliers 1, scalar biases 0 (Zhang et al. 2019)

`bias=0.01` gives every layer the small positive bias the lectures suggest against dead ReLUs; `seed=`
makes a scheme draw from its own generator, so the same seed gives identical weights. Schemes marked
`needs_data` take `batch=`, a preprocessed float input batch on the model's device.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.nn.activations import activation_gain
from trainlab.nn.layers import ResidualBlock, fixup_scalars
from trainlab.registry import Registry, suggest

INITIALIZERS = Registry("initializer")


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of `model`, in registration order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a (out, in, *kernel) weight: each times the kernel's area."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def init_layers(model: nn.Module, sample: Callable, bias: float = 0.0, seed: int | None = None) -> None:
    """Set each layer's weight to sample(weight, generator) and its bias to the constant `bias`."""
    layers = weight_layers(model)
    g = generator(seed, layers[0].weight.device) if layers else None
    for layer in layers:
        layer.weight.copy_(sample(layer.weight, g))
        if layer.bias is not None:
            layer.bias.fill_(bias)


def gaussian(w: torch.Tensor, std: float, g: torch.Generator | None, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype) * std + mean


def uniform_in(w: torch.Tensor, limit: float, g: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(w.shape, generator=g, device=w.device, dtype=w.dtype) * 2 - 1) * limit


@INITIALIZERS.register("default", needs_data=False)
def default_init(model: nn.Module) -> None:
    """Leave PyTorch's own default initialisation in place."""


@INITIALIZERS.register("zeros", needs_data=False)
def zeros(model: nn.Module, bias: float = 0.0) -> None:
    """W = 0: every unit gets the same gradient and they never differ (the symmetry problem)."""
    init_layers(model, lambda w, g: torch.zeros_like(w), bias)


@INITIALIZERS.register("constant", needs_data=False)
def constant(model: nn.Module, value: float = 0.01, bias: float = 0.0) -> None:
    """W = value: like zeros, all units of a layer stay identical."""
    init_layers(model, lambda w, g: torch.full_like(w, value), bias)


@INITIALIZERS.register("normal", needs_data=False)
def normal(
    model: nn.Module, std: float = 1.0, mean: float = 0.0, bias: float = 0.0, seed: int | None = None
) -> None:
    """W ~ N(mean, std^2); std = 1 saturates tanh nets within a few layers."""
    init_layers(model, lambda w, g: gaussian(w, std, g, mean), bias, seed)


@INITIALIZERS.register("small_random", needs_data=False)
def small_random(model: nn.Module, scale: float = 0.01, bias: float = 0.0, seed: int | None = None) -> None:
    """The lectures' W = 0.01 * randn: fine for small nets, activations collapse to 0 in deep ones."""
    init_layers(model, lambda w, g: gaussian(w, scale, g), bias, seed)


@INITIALIZERS.register("uniform", needs_data=False)
def uniform(model: nn.Module, limit: float = 0.05, bias: float = 0.0, seed: int | None = None) -> None:
    """W ~ U(-limit, limit), so std = limit / sqrt(3)."""
    init_layers(model, lambda w, g: uniform_in(w, limit, g), bias, seed)


def resolve_gain(act: str, gain: float | None, slope: float | None) -> float:
    return gain if gain is not None else activation_gain(act, slope)


@INITIALIZERS.register("xavier_normal", aliases=("glorot_normal",), needs_data=False)
def xavier_normal(
    model: nn.Module,
    act: str = "identity",
    gain: float | None = None,
    bias: float = 0.0,
    seed: int | None = None,
) -> None:
    """W ~ N(0, gain^2 * 2 / (fan_in + fan_out)); gain from `act` (5/3 for tanh) unless given."""
    k = resolve_gain(act, gain, None)
    init_layers(model, lambda w, g: gaussian(w, k * math.sqrt(2 / sum(fans(w))), g), bias, seed)


@INITIALIZERS.register("xavier_uniform", aliases=("glorot_uniform",), needs_data=False)
def xavier_uniform(
    model: nn.Module,
    act: str = "identity",
    gain: float | None = None,
    bias: float = 0.0,
    seed: int | None = None,
) -> None:
    """W ~ U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)), the same variance as xavier_normal."""
    k = resolve_gain(act, gain, None)
    init_layers(model, lambda w, g: uniform_in(w, k * math.sqrt(6 / sum(fans(w))), g), bias, seed)


def kaiming_std(w: torch.Tensor, gain: float, mode: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ConfigError(f"kaiming mode={mode!r} is not valid (expected 'fan_in' or 'fan_out')")
    fan_in, fan_out = fans(w)
    return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)


@INITIALIZERS.register("kaiming_normal", aliases=("he_normal",), needs_data=False)
def kaiming_normal(
    model: nn.Module,
    act: str = "relu",
    slope: float | None = None,
    mode: str = "fan_in",
    bias: float = 0.0,
    seed: int | None = None,
) -> None:
    """W ~ N(0, 2 / ((1 + a^2) fan)) for (leaky) ReLU with slope a; fan_in keeps forward variance."""
    k = activation_gain(act, slope)
    init_layers(model, lambda w, g: gaussian(w, kaiming_std(w, k, mode), g), bias, seed)


@INITIALIZERS.register("kaiming_uniform", aliases=("he_uniform",), needs_data=False)
def kaiming_uniform(
    model: nn.Module,
    act: str = "relu",
    slope: float | None = None,
    mode: str = "fan_in",
    bias: float = 0.0,
    seed: int | None = None,
) -> None:
    """W ~ U(-a, a) with a = sqrt(3) * kaiming std."""
    k = activation_gain(act, slope)
    init_layers(model, lambda w, g: uniform_in(w, math.sqrt(3) * kaiming_std(w, k, mode), g), bias, seed)


def orthonormal(w: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """A (semi-)orthogonal matrix of w's shape flattened to (out, fan_in), via QR of a Gaussian matrix."""
    rows, cols = w.shape[0], w[0].numel()
    a = torch.randn(max(rows, cols), min(rows, cols), generator=g, device=w.device)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # makes the draw uniform over orthogonal matrices (Mezzadri 2007)
    return (q if rows >= cols else q.T).reshape(w.shape).to(w.dtype)


@INITIALIZERS.register("orthogonal", needs_data=False)
def orthogonal(model: nn.Module, gain: float = 1.0, bias: float = 0.0, seed: int | None = None) -> None:
    """Orthogonal rows (or columns) times `gain`: exact isometry for deep linear nets (Saxe et al. 2013)."""
    init_layers(model, lambda w, g: gain * orthonormal(w, g), bias, seed)


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def layer_output(model: nn.Module, layer: nn.Module, batch: torch.Tensor) -> torch.Tensor | None:
    """`layer`'s output when `model` runs on `batch`, the rest of the forward pass skipped; None if the
    layer does not run (an auxiliary head in eval mode, say)."""
    captured = []

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured.append(output)
        raise StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(batch)
    except StopForward:
        pass
    finally:
        handle.remove()
    return captured[0] if captured else None


def require_batch(scheme: str, batch: torch.Tensor | None) -> torch.Tensor:
    if batch is None:
        raise ConfigError(f"initializer {scheme!r} needs data: pass batch= (a preprocessed input batch)")
    return batch


class StatePreserved:
    """Run forwards in training mode without leaving a trace in running statistics (BN buffers)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.buffers = {k: v.clone() for k, v in self.model.named_buffers()}

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for k, v in self.model.named_buffers():
                v.copy_(self.buffers[k])


@INITIALIZERS.register("lsuv", needs_data=True)
@torch.no_grad()
def lsuv(
    model: nn.Module,
    batch: torch.Tensor | None = None,
    tol: float = 0.1,
    max_iter: int = 10,
    bias: float = 0.0,
    seed: int | None = None,
) -> None:
    """Layer-sequential unit variance: orthonormal init, then, layer by layer from the input side,
    W /= sqrt(Var(layer output)) on `batch` until |Var - 1| < tol or max_iter rescalings."""
    batch = require_batch("lsuv", batch)
    orthogonal(model, bias=bias, seed=seed)
    with StatePreserved(model):
        for layer in weight_layers(model):
            for _ in range(max_iter):
                out = layer_output(model, layer, batch)
                var = out.var().item() if out is not None else 1.0
                if abs(var - 1) < tol or var == 0:  # converged, not run, or dead: nothing to rescale
                    break
                layer.weight.div_(math.sqrt(var))


@INITIALIZERS.register("data_dependent", needs_data=True)
@torch.no_grad()
def data_dependent(model: nn.Module, batch: torch.Tensor | None = None, seed: int | None = None) -> None:
    """Random Gaussian weights, then layer by layer each output channel c is set to zero mean and unit
    variance on `batch`: W_c /= sigma_c, b_c = -mu_c / sigma_c (layers without a bias only rescale).
    The paper's between-layer rescaling of learning rates (its Algorithm 2) is not included."""
    batch = require_batch("data_dependent", batch)
    normal(model, std=1.0, seed=seed)
    with StatePreserved(model):
        for layer in weight_layers(model):
            out = layer_output(model, layer, batch)
            if out is None:
                continue
            z = out.transpose(0, 1).flatten(1)  # (C_out, N * spatial)
            mean, std = z.mean(1), z.std(1).clamp_min(1e-8)
            layer.weight.div_(std.view(-1, *([1] * (layer.weight.dim() - 1))))
            if layer.bias is not None:
                layer.bias.copy_((layer.bias - mean) / std)


@INITIALIZERS.register("fixup", needs_data=False)
@torch.no_grad()
def fixup(model: nn.Module, act: str = "relu", seed: int | None = None) -> None:
    """Fixup for L residual branches of m layers each, no normalisation (Zhang et al. 2019):
    He init everywhere; then in each branch the last layer is 0 and the others are scaled by
    L^(-1 / (2m - 2)); the classifier (the last linear layer outside the branches) is 0. So every block
    starts as the identity and the output variance does not grow with depth. The paper's scalars are
    architecture, built by the blocks without a norm (trainlab.nn.layers); here every scalar multiplier
    is set to 1 and every scalar bias to 0, so a trained model re-initialised starts from the identity."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise ConfigError(
            f"initializer 'fixup' needs residual blocks (ResidualBlock); {type(model).__name__} has none"
        )
    kaiming_normal(model, act=act, seed=seed)
    in_branch = set()
    for block in blocks:
        branch = block.branch_layers()
        in_branch.update(id(layer) for layer in branch)
        scale = len(blocks) ** (-1 / (2 * len(branch) - 2)) if len(branch) > 1 else 0.0
        for layer in branch[:-1]:
            layer.weight.mul_(scale)
        branch[-1].weight.zero_()
    classifier = [m for m in weight_layers(model) if isinstance(m, nn.Linear) and id(m) not in in_branch]
    if classifier:
        classifier[-1].weight.zero_()
        if classifier[-1].bias is not None:
            classifier[-1].bias.zero_()
    for scalar in fixup_scalars(model):
        scalar.reset_parameters()


def init_model(model: nn.Module, scheme: str | None, **options: Any) -> nn.Module:
    """Initialise `model` in place with `scheme` and return it. Data-dependent schemes take `batch=`."""
    name = INITIALIZERS.canonical(scheme or "default")
    fn = INITIALIZERS.get(name)
    accepted = [p for p in inspect.signature(fn).parameters if p != "model"]
    for key in options:
        if key not in accepted:
            raise ConfigError(suggest(key, accepted, f"option for initializer {name!r}:"))
    fn(model, **options)
    return model


def list_initializers() -> list[str]:
    return INITIALIZERS.list()
