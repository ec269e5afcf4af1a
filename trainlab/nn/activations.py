"""Activation functions, registered by name, each with a closed-form derivative and the lectures' metadata.

Every activation is a module whose `derivative(x)` gives d f(x) / dx elementwise in closed form; it takes
a torch tensor or a NumPy array and returns the same kind. NumPy input goes to the torch-free twin of the
same name in trainlab.nn.activation_formulas, which the NumPy backprop engine (trainlab.scratch) uses too.
Registration metadata: output `range`, `zero_centred`, where it `saturates`, whether units `can_die`, and
the He-style `gain` that initialisers read. `activation_table()` adds a measured relative cost and the
gradient at x = -10, 0, 10, the question the lectures ask of each activation.

Papers: ReLU (Nair & Hinton 2010; Krizhevsky et al. 2012), Leaky ReLU (Maas et al. 2013), PReLU (He et al.
2015), ELU (Clevert et al. 2015), Maxout (Goodfellow et al. 2013), Swish (Ramachandran et al. 2017),
GELU (Hendrycks & Gimpel 2016), Mish (Misra 2019).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ConfigError
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.registry import Registry

ACTIVATIONS = Registry("activation")


class Activation(nn.Module):
    """Base class: `forward` is the function, `grad` its closed-form derivative on torch tensors."""

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def formula_options(self) -> dict[str, Any]:
        """The options of its NumPy formula: the attributes of the same names (slope, alpha, beta, ...)."""
        return {name: getattr(self, name) for name in FORMULAS.get(registered_name(self)).options}

    def derivative(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """d f(x) / dx elementwise; a NumPy array in gives a NumPy array out, from the NumPy formula of its
        registered name (a subclass registered under no name goes through torch)."""
        if isinstance(x, np.ndarray):
            if registered_name(self) is None:
                return self.grad(torch.from_numpy(x)).numpy()
            return FORMULAS.get(registered_name(self)).derivative(x, **self.formula_options())
        return self.grad(x)


def registered_name(act: Activation) -> str | None:
    """The name its class is registered under (swish for SiLU, which is swish with beta = 1)."""
    return next((name for name in ACTIVATIONS.list() if ACTIVATIONS.get(name) is type(act)), None)


@ACTIVATIONS.register(
    "sigmoid", range="(0, 1)", zero_centred=False, saturates="both tails", can_die=False, gain=1.0
)
class Sigmoid(Activation):
    """sigma(x) = 1 / (1 + e^-x); sigma' = sigma (1 - sigma) <= 1/4, which is why it kills gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s)


@ACTIVATIONS.register(
    "tanh", range="(-1, 1)", zero_centred=True, saturates="both tails", can_die=False, gain=5 / 3
)
class Tanh(Activation):
    """tanh(x) = 2 sigma(2x) - 1; tanh' = 1 - tanh^2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - torch.tanh(x).square()


@ACTIVATIONS.register(
    "relu", range="[0, inf)", zero_centred=False, saturates="x < 0", can_die=True, gain=math.sqrt(2)
)
class ReLU(Activation):
    """max(0, x). The derivative at exactly 0 is taken as 0, as autograd does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)


@ACTIVATIONS.register(
    "leaky_relu", range="(-inf, inf)", zero_centred=False, saturates="none", can_die=False, gain=None
)
class LeakyReLU(Activation):
    """max(a x, x) with a small fixed slope a (0.01 by default; the lectures also use 0.1)."""

    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, 1.0, self.slope).to(x.dtype)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


@ACTIVATIONS.register(
    "prelu", range="(-inf, inf)", zero_centred=False, saturates="none", can_die=False, gain=None
)
class PReLU(Activation):
    """max(a x, x) with a learned slope a: one shared (num_parameters=1) or one per channel (dim 1)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight.detach().view(-1, *([1] * (x.dim() - 2))) if x.dim() > 1 else self.weight.detach()
        return torch.where(x > 0, torch.ones_like(x), slope.to(x.dtype))

    def formula_options(self) -> dict[str, Any]:
        return {"slope": self.weight.detach().cpu().numpy()}


@ACTIVATIONS.register(
    "elu",
    range="(-alpha, inf)",
    zero_centred=False,
    saturates="x << 0 (to -alpha)",
    can_die=False,
    gain=math.sqrt(2),
)
class ELU(Activation):
    """x if x > 0 else alpha (e^x - 1); near-zero-mean outputs without dead units."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(x.clamp_max(0)))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@ACTIVATIONS.register(
    "relu6", range="[0, 6]", zero_centred=False, saturates="x < 0 and x > 6", can_die=True, gain=math.sqrt(2)
)
class ReLU6(Activation):
    """min(max(0, x), 6) = relu(x) - relu(x - 6). Pitfall: the gradient is 0 above 6 as well as below 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return ((x > 0) & (x < 6)).to(x.dtype)


@ACTIVATIONS.register(
    "swish",
    range="[~-0.28/beta, inf)",
    zero_centred=False,
    saturates="x << 0",
    can_die=False,
    gain=math.sqrt(2),
)
class Swish(Activation):
    """x sigma(beta x); beta = 1 is SiLU. f' = s + beta x s (1 - s) with s = sigma(beta x)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x) if self.beta == 1.0 else x * torch.sigmoid(self.beta * x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.beta * x)
        return s + self.beta * x * s * (1 - s)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


@ACTIVATIONS.register(
    "silu", range="[~-0.28, inf)", zero_centred=False, saturates="x << 0", can_die=False, gain=math.sqrt(2)
)
def silu() -> Swish:
    """SiLU is swish with beta = 1 (Elfwing et al. 2017)."""
    return Swish(beta=1.0)


@ACTIVATIONS.register(
    "mish", range="[~-0.31, inf)", zero_centred=False, saturates="x << 0", can_die=False, gain=math.sqrt(2)
)
class Mish(Activation):
    """x tanh(softplus(x)); f' = tanh(sp) + x (1 - tanh(sp)^2) sigma(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(F.softplus(x))
        return t + x * (1 - t.square()) * torch.sigmoid(x)


@ACTIVATIONS.register(
    "gelu", range="[~-0.17, inf)", zero_centred=False, saturates="x << 0", can_die=False, gain=math.sqrt(2)
)
class GELU(Activation):
    """x Phi(x), exact (erf), or approximated by 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"gelu approximate={approximate!r} is not valid (expected 'none' or 'tanh')")
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = torch.tanh(c * (x + 0.044715 * x**3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t.square()) * c * (1 + 3 * 0.044715 * x.square())
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        pdf = torch.exp(-0.5 * x.square()) / math.sqrt(2 * math.pi)
        return cdf + x * pdf

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


@ACTIVATIONS.register(
    "softplus", range="(0, inf)", zero_centred=False, saturates="x << 0", can_die=False, gain=math.sqrt(2)
)
class Softplus(Activation):
    """log(1 + e^(beta x)) / beta, a smooth ReLU; f' = sigma(beta x)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, self.beta)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.beta * x)


@ACTIVATIONS.register(
    "softsign",
    range="(-1, 1)",
    zero_centred=True,
    saturates="both tails (polynomially)",
    can_die=False,
    gain=1.0,
)
class Softsign(Activation):
    """x / (1 + |x|); f' = 1 / (1 + |x|)^2, a tanh whose tails flatten polynomially, not exponentially."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softsign(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + x.abs()).square()


@ACTIVATIONS.register(
    "identity", range="(-inf, inf)", zero_centred=True, saturates="none", can_die=False, gain=1.0
)
class Identity(Activation):
    """f(x) = x; a network of these is one linear map, whatever its depth."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)


@ACTIVATIONS.register(
    "maxout",
    range="(-inf, inf)",
    zero_centred=True,
    saturates="none",
    can_die=False,
    gain=math.sqrt(2),
    wraps_layer=True,
)
class Maxout(Activation):
    """max(w_1^T x + b_1, ..., w_k^T x + b_k) (Goodfellow et al. 2013): wraps a Linear or Conv layer.

    The wrapped layer's outputs are computed k times, so its parameters are multiplied by k; the module
    replaces both the layer and its activation: `Maxout(nn.Conv2d(3, 16, 3), k=2)`, then norm, no act.
    """

    def __init__(self, layer: nn.Module | None = None, k: int = 2):
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
            raise ConfigError(
                "maxout wraps a layer: pass layer=nn.Linear(...) or nn.Conv2d(...), "
                f"got {type(layer).__name__} (models check ACTIVATIONS.meta(act)['wraps_layer'])"
            )
        if k < 2:
            raise ConfigError(f"maxout k={k} is not valid (expected an integer >= 2)")
        self.k = k
        self.layer = widen_outputs(layer, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.layer(x)  # (B, k * C, ...): k pieces per output unit, piece-major
        return z.unflatten(1, (self.k, -1)).amax(1)

    def grad(self, pieces: torch.Tensor) -> torch.Tensor:
        """d max / d piece for pieces stacked on dim 0 (k, ...): 1 for the winning piece, 0 for the rest."""
        return F.one_hot(pieces.argmax(0), self.k).movedim(-1, 0).to(pieces.dtype)

    def formula_options(self) -> dict[str, Any]:
        return {}  # pieces on axis 0, the formula's default


def widen_outputs(layer: nn.Module, k: int) -> nn.Module:
    """A fresh layer like `layer` but with k times its output units (and so k times its parameters)."""
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, k * layer.out_features, bias=has_bias)
    return type(layer)(
        layer.in_channels,
        k * layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=has_bias,
        padding_mode=layer.padding_mode,
    )


def create_activation(act: str | dict[str, Any] | nn.Module, **options: Any) -> nn.Module:
    """Build an activation from a name ("relu"), a config ({"name": "elu", "alpha": 1.0}) or a module."""
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, dict):
        options = {**{k: v for k, v in act.items() if k != "name"}, **options}
        act = act["name"]
    cls = ACTIVATIONS.get(act)
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"bad options {options} for activation {act!r}: {e}") from None


def list_activations() -> list[str]:
    return ACTIVATIONS.list()


def activation_gain(act: str, slope: float | None = None) -> float:
    """The gain g with Var(W) = g^2 / fan (He et al. 2015): sqrt(2 / (1 + a^2)) for leaky slopes a."""
    name = ACTIVATIONS.canonical(act)
    if name in ("leaky_relu", "prelu"):
        a = slope if slope is not None else (0.01 if name == "leaky_relu" else 0.25)
        return math.sqrt(2 / (1 + a * a))
    return ACTIVATIONS.meta(name)["gain"]


def sample_activation(name: str) -> Activation:
    """The default-option instance used for the table; maxout wraps a 1 -> 1 linear layer."""
    return Maxout(nn.Linear(1, 1)) if name == "maxout" else create_activation(name)


@functools.lru_cache(maxsize=1)
def relative_costs(numel: int = 1 << 18, repeats: int = 7, calls: int = 5) -> dict[str, float]:
    """Forward time of each activation on `numel` float32 values, relative to ReLU.

    One thread and the fastest of `repeats`, so other processes on the machine disturb it least.
    Maxout is timed on its elementwise part only, the max over k = 2 pieces; its layer costs k times more.
    Measured once per process and cached (well under a second on a 2-core CPU).
    """
    x = torch.randn(numel)
    pieces = torch.randn(2, numel)
    times = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for name in ACTIVATIONS.list():
                fn = (
                    (lambda: pieces.amax(0))
                    if name == "maxout"
                    else functools.partial(sample_activation(name), x)
                )
                fn()
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    samples.append(time.perf_counter() - start)
                times[name] = min(samples)
    finally:
        torch.set_num_threads(threads)
    return {name: t / times["relu"] for name, t in times.items()}


def activation_table(measure_cost: bool = True) -> list[dict[str, Any]]:
    """One row per activation: metadata, measured relative cost, and the gradient at x = -10, 0 and 10.

    Maxout's gradient is the one of the winning piece (always 1); the rest use default options.
    """
    costs = relative_costs() if measure_cost else {}
    points = torch.tensor([-10.0, 0.0, 10.0])
    rows = []
    for name in ACTIVATIONS.list():
        meta = ACTIVATIONS.meta(name)
        grads = [1.0] * 3 if name == "maxout" else sample_activation(name).derivative(points).tolist()
        rows.append(
            {
                "name": name,
                "range": meta["range"],
                "zero_centred": meta["zero_centred"],
                "saturates": meta["saturates"],
                "can_die": meta["can_die"],
                "relative_cost": round(costs[name], 2) if name in costs else None,
                **{f"grad({p:g})": round(g, 6) for p, g in zip(points.tolist(), grads)},
            }
        )
    return rows
