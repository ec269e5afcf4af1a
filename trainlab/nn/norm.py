"""Normalisation layers, selectable by name with `norm=`.

(Skeleton: issue 3 adds trainlab's own BatchNorm, frozen mode and fold_batchnorm.)
"""

from __future__ import annotations

from torch import nn

from trainlab.registry import Registry

NORMS = Registry("norm")


@NORMS.register("none")
def no_norm(num_features: int, dim: int = 2) -> nn.Module:
    return nn.Identity()


@NORMS.register("batch")
def batch_norm(num_features: int, dim: int = 2) -> nn.Module:
    return nn.BatchNorm2d(num_features) if dim == 2 else nn.BatchNorm1d(num_features)


def create_norm(name: str | None, num_features: int, dim: int = 2) -> nn.Module:
    """A normalisation layer for `num_features` channels; dim=2 after a conv, dim=1 after a linear layer."""
    return NORMS.create(name or "none", num_features, dim=dim)


def list_norms() -> list[str]:
    return NORMS.list()
