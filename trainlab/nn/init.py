"""Weight initialisation schemes, registered by name.

(Skeleton: issue 3 adds the full family: zeros, constant, small_random, xavier, kaiming, orthogonal,
LSUV, data-dependent and Fixup.)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainlab.registry import Registry

INITIALIZERS = Registry("initializer")


@INITIALIZERS.register("default", needs_data=False)
def default_init(model: nn.Module, **options: Any) -> None:
    """Leave PyTorch's own default initialisation in place."""


@INITIALIZERS.register("kaiming_normal", needs_data=False)
def kaiming_normal(model: nn.Module, **options: Any) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_model(model: nn.Module, scheme: str | None, **options: Any) -> nn.Module:
    """Initialise `model` in place with `scheme` and return it. Data-dependent schemes take `batch=`."""
    INITIALIZERS.create(scheme or "default", model, **options)
    return model


def list_initializers() -> list[str]:
    return INITIALIZERS.list()
