"""The model registry: `@register_model` on a thin function, `create_model(name, ...)` to build.

Every registered function takes `in_channels`, `num_classes` and `image_size` (the input's height, so a
family can pick its small-input variant), plus its own options such as `act`, `norm` and `dropout`.
A model registered with `takes_vectors=True` (mlp) also takes `in_features`, for (N, D) feature vectors.
`create_model` validates the options against the function's signature and applies `init`.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from trainlab.config import Config
from trainlab.errors import ConfigError
from trainlab.models.stages import cut_after
from trainlab.nn.activations import ACTIVATIONS
from trainlab.nn.init import INITIALIZERS, init_model
from trainlab.nn.norm import NORMS
from trainlab.registry import Registry, suggest

MODELS = Registry("model")
register_model = MODELS.register


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts, with their defaults (inspect.Parameter.empty when required)."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is not p.VAR_KEYWORD}


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """ConfigError, before anything is built, unless model `name` takes every option (its signature) and
    the activation and norm they name are registered. trainlab.config has checked each value's type and
    range (MODEL_OPTIONS) where it was set."""
    accepted = model_options(name)
    for key in options:
        if key not in accepted:
            raise ConfigError(suggest(key, list(accepted), f"option for model {name!r}:"))
    for key, registry in (("act", ACTIVATIONS), ("norm", NORMS)):
        value = options.get(key)
        value = value.get("name") if isinstance(value, dict) else value
        if isinstance(value, str):
            try:
                registry.canonical(value)
            except ConfigError as e:
                raise ConfigError(f"model.{key}: {e}") from None


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    init: str | None = None,
    init_options: dict[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Build registered model `name`. Unknown options raise ConfigError naming the closest valid one.

    Data-dependent initialisers (LSUV, data_dependent) need a batch, so the Trainer applies them;
    here they are skipped.
    """
    check_model_options(name, options)
    model = MODELS.get(name)(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options
    )
    if init and not INITIALIZERS.meta(init).get("needs_data", False):
        init_model(model, init, **(init_options or {}))
    return model


def list_models() -> list[str]:
    return MODELS.list()


def vector_models() -> list[str]:
    """The models registered with takes_vectors=True: they take (N, D) feature vectors as well as images."""
    return [name for name in MODELS.list() if MODELS.meta(name).get("takes_vectors")]


def require_vector_input(name: str, why: str) -> None:
    """ConfigError unless model `name` takes feature vectors; `why` says where the vectors come from."""
    if not MODELS.meta(name).get("takes_vectors"):
        raise ConfigError(
            f"{why}, and model {name!r} takes images (models that take vectors: {', '.join(vector_models())})"
        )


def model_from_config(cfg: Config, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """The model a run's config describes, for inputs of `input_shape`: images (C, H, W), or feature
    vectors (D,) (the pca modes' k components) for a model that takes vectors."""
    if "in_features" in cfg.model.options:
        raise ConfigError("model.in_features is set from the data (the pca modes' k), not in the config")
    if len(input_shape) == 1:
        require_vector_input(cfg.model.name, f"the input is a vector of {input_shape[0]} features")
        size = {"in_features": input_shape[0]}
    else:
        size = {"in_channels": input_shape[0], "image_size": input_shape[1]}
    model = create_model(
        cfg.model.name,
        num_classes=num_outputs,
        init=cfg.model.init,
        init_options=cfg.model.init_options,
        **size,
        **cfg.model.options,
    )
    if cfg.model.keep_stages is not None:  # transfer: the first k stages and a new head (docs/transfer.md)
        cut_after(model, cfg.model.keep_stages, input_shape)
    return model
