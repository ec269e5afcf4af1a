"""Weight initialisers of the NumPy engine, by name: `create_init("he", (fan_in, fan_out), rng)`.

    zeros           W = 0: every unit of a layer computes the same thing (the symmetry problem)
    small_random    W = 0.01 * randn, the lectures' first try; activations shrink layer by layer
    xavier          Var(W) = 2 / (fan_in + fan_out)          (Glorot & Bengio 2010; cs231n's simpler
                                                              version is 1 / fan_in)
    he              Var(W) = 2 / fan_in, for ReLU units      (He et al. 2015)

A 2-D shape is (fan_in, fan_out), W as the lectures write it; a 4-D shape is a conv weight
(C_out, C_in, k_h, k_w), with fan_in = C_in k_h k_w and fan_out = C_out k_h k_w. Values are drawn in
float64 and then cast, so a float32 model is the float64 model of the same seed, rounded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainlab.errors import ConfigError
from trainlab.registry import Registry

INITIALIZERS = Registry("initializer")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a (fan_in, fan_out) weight or a (C_out, C_in, k_h, k_w) conv weight."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    raise ConfigError(
        f"weight shape {shape} is not valid (expected (fan_in, fan_out) or (C_out, C_in, kh, kw))"
    )


@INITIALIZERS.register("zeros")
def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.zeros(shape)


@INITIALIZERS.register("small_random", aliases=("small",))
def small_random(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return 0.01 * rng.standard_normal(shape)


@INITIALIZERS.register("xavier", aliases=("xavier_normal", "glorot", "glorot_normal"))
def xavier(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    return math.sqrt(2 / (fan_in + fan_out)) * rng.standard_normal(shape)


@INITIALIZERS.register("he", aliases=("kaiming", "kaiming_normal", "he_normal"))
def he(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_in, _ = fans(shape)
    return math.sqrt(2 / fan_in) * rng.standard_normal(shape)


def create_init(name: str, shape: tuple[int, ...], rng: Any = None, dtype: Any = np.float32) -> np.ndarray:
    """A weight of `shape` from the initialiser `name`, drawn from `rng` (a np.random.Generator, or a seed;
    None: a fresh unseeded one). An unknown name is a ConfigError that lists the valid ones."""
    sample = INITIALIZERS.get(name)
    return sample(tuple(shape), np.random.default_rng(rng)).astype(dtype)


create = create_init


def list_inits() -> list[str]:
    return INITIALIZERS.list()
