"""The augmentation registry and what every operation shares.

An operation draws its parameters per sample, from an explicit torch.Generator on the data's device.
There are four kinds, and `Augment` fuses each kind into as few passes over the pixels as it can:

    "affine"  an inverse matrix (B, 3, 3) per sample; all of them compose into one resampling pass
    "color"   a matrix (B, C, C) and a bias (B, C) per sample; all of them compose into one bmm
    "pixel"   transforms the float batch itself (tone, distortion, erasing, policies)
    "mix"     mixes pairs of samples and their soft targets (mixup, cutmix), always last
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from trainlab.errors import ConfigError
from trainlab.registry import Registry

AUGMENTATIONS = Registry("augmentation")


def list_augmentations() -> list[str]:
    """The registered operation names, sorted (aliases not included)."""
    return AUGMENTATIONS.list()


class Op:
    """One augmentation with a probability `p` per sample; `primary` is the option that `name=value` sets."""

    kind = "pixel"
    primary = "p"  # ops without a main parameter read `name=value` as the probability

    def __init__(self, p: float = 1.0):
        self.p = probability(p, self.name)

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__.lower())

    def get_config(self) -> dict[str, Any]:
        """The resolved options, every one of them, in signature order."""
        names = [k for k in inspect.signature(type(self).__init__).parameters if k != "self"]
        return {k: getattr(self, k) for k in names}

    def chosen(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) bool: which samples this op applies to (ops skip the draw when p = 1)."""
        return torch.rand(n, generator=generator, device=generator.device) < self.p

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def register(name: str, *, aliases: tuple[str, ...] = ()) -> Callable:
    """Register an Op class under `name`; the class remembers its name for errors and get_config."""

    def decorator(cls: type) -> type:
        cls.registered_name = name
        return AUGMENTATIONS.register(name, aliases=aliases)(cls)

    return decorator


def probability(p: Any, op: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{op}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def number(value: Any, op: str, option: str, low: float | None = None, high: float | None = None) -> float:
    """A float option in [low, high]; ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{op}: {option} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (
            f"in [{low}, {high}]"
            if low is not None and high is not None
            else f">= {low}"
            if high is None
            else f"<= {high}"
        )
        raise ConfigError(f"{op}: {option} must be {bound}, got {value:g}")
    return value


def span(
    value: Any, op: str, option: str, centre: float = 0.0, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """A range option: a number s means [centre - s, centre + s]; a pair (lo, hi) is taken as given."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{op}: {option} must be a number or a lo:hi range, got {value!r}")
        lo, hi = (number(v, op, option, low, high) for v in value)
        if lo > hi:
            raise ConfigError(f"{op}: {option} range {lo}:{hi} has lo > hi")
        return (float(lo), float(hi))
    s = number(value, op, option, 0.0)
    return (number(centre - s, op, option, low, high), number(centre + s, op, option, low, high))


def fixed_or_range(
    value: Any, op: str, option: str, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """A number v means exactly v; a pair (lo, hi) is a range."""
    if isinstance(value, (list, tuple)):
        return span(value, op, option, low=low, high=high)
    v = float(number(value, op, option, low, high))
    return (v, v)


def uniform(generator: torch.Generator, n: int, bounds: tuple[float, float]) -> torch.Tensor:
    """(n,) float32 uniform in [lo, hi], on the generator's device."""
    lo, hi = bounds
    return torch.rand(n, generator=generator, device=generator.device).mul_(hi - lo).add_(lo)


def random_sign(generator: torch.Generator, n: int) -> torch.Tensor:
    """(n,) of +1 or -1, equally likely."""
    return torch.randint(0, 2, (n,), generator=generator, device=generator.device).mul_(2).sub_(1).float()


def pixels(length: float, side: int) -> float:
    """A length option: 1 or more is pixels; below 1 is a fraction of the image side."""
    return float(length) if length >= 1 else float(length) * side


class Scratch:
    """Buffers reused across calls for intermediates that never leave `Augment`, on the CPU only.

    Fresh memory costs a page fault per 4 KiB page on first touch: for a 512x3x32x32 float batch that
    was 6 to 8 ms per call on one core, as much as all the arithmetic of the typical pipeline. CUDA's
    caching allocator already reuses memory, so there every call gets a plain new tensor.
    """

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(
        self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zeros: bool = False
    ):
        new = torch.zeros if zeros else torch.empty
        if device.type != "cpu":
            return new(shape, dtype=dtype, device=device)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self.buffers[key] = new(shape, dtype=dtype)
        return buffer


def avoid_host_sync(x: torch.Tensor) -> bool:
    """Whether ops on `x` must not read data-dependent sizes (`nonzero`), because the host would wait
    for the device: true on accelerators. There, an op transforms every sample and keeps the chosen
    ones with `where`; on the CPU it gathers and transforms only the chosen ones. Both paths give the
    same images (tests check this on the CPU by forcing the accelerator path). Other modules call it
    as `base.avoid_host_sync`, so that this one function decides for every op."""
    return x.device.type != "cpu"


def on_chosen(x: torch.Tensor, chosen: torch.Tensor | None, fn: Callable) -> torch.Tensor:
    """`fn(x_sub, sel)` on the chosen samples only; `sel` indexes the per-sample parameters.

    On the CPU only the chosen samples are gathered and transformed. On accelerators every sample is
    transformed and the result is blended with `where`: a trivial blend, but no host synchronisation.
    """
    if chosen is None:
        return fn(x, slice(None))
    if avoid_host_sync(x):
        return torch.where(chosen.view(-1, 1, 1, 1), fn(x, slice(None)), x)
    sel = chosen.nonzero().squeeze(1)
    if len(sel) == 0:
        return x
    return x.index_copy(0, sel, fn(x.index_select(0, sel), sel))
