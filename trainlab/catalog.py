"""Every registry trainlab has, by family name, for `trainlab list FAMILY [--json]`."""

from __future__ import annotations

from collections.abc import Callable

from trainlab.errors import ConfigError
from trainlab.registry import Registry, suggest


def registry_rows(registry: Registry) -> list[dict]:
    return [{"name": name, **registry.meta(name)} for name in registry.list()]


def models() -> list[dict]:
    from trainlab.models import MODELS, model_options

    return [
        {
            "name": n,
            "options": ", ".join(
                k for k in model_options(n) if k not in ("in_channels", "num_classes", "image_size")
            ),
        }
        for n in MODELS.list()
    ]


def datasets() -> list[dict]:
    from trainlab.data.datasets import DATASETS, search_roots

    rows = [
        {"name": n, "classes": len(DATASETS.get(n).classes), "searched": str(search_roots(n)[-1])}
        for n in DATASETS.list()
    ]
    return rows + [{"name": "folder:PATH", "classes": "one per subfolder", "searched": "PATH"}]


def recipes() -> list[dict]:
    from trainlab.config import read_recipe, recipe_names

    rows = []
    for name in recipe_names():
        recipe = read_recipe(name)
        rows.append(
            {
                "name": name,
                "model": recipe.get("model", {}).get("name", "cnn"),
                "epochs": recipe.get("train", {}).get("epochs", ""),
            }
        )
    return rows


def activations() -> list[dict]:
    from trainlab.nn.activations import activation_table

    return activation_table()


def initializers() -> list[dict]:
    from trainlab.nn.init import INITIALIZERS

    return registry_rows(INITIALIZERS)


def norms() -> list[dict]:
    from trainlab.nn.norm import NORMS

    return registry_rows(NORMS)


def preprocessing() -> list[dict]:
    from trainlab.data.preprocess import PREPROCESSING_MODES

    return registry_rows(PREPROCESSING_MODES)


def augmentations() -> list[dict]:
    from trainlab.data.augment import AUGMENTATIONS

    return registry_rows(AUGMENTATIONS)


def optimizers() -> list[dict]:
    from trainlab.training.optim import OPTIMIZERS

    return registry_rows(OPTIMIZERS)


def schedules() -> list[dict]:
    from trainlab.training.optim import SCHEDULES

    return registry_rows(SCHEDULES)


def penalties() -> list[dict]:
    from trainlab.nn.regularize import PENALTIES

    return registry_rows(PENALTIES)


def tasks() -> list[dict]:
    from trainlab.tasks import TASKS

    return [
        {
            "name": n,
            "monitors": f"val_{TASKS.get(n).monitor}",
            "doc": (TASKS.get(n).__doc__ or "").split("\n")[0],
        }
        for n in TASKS.list()
    ]


def experiments() -> list[dict]:
    from trainlab.experiments import EXPERIMENTS

    return registry_rows(EXPERIMENTS)


FAMILIES: dict[str, Callable[[], list[dict]]] = {
    "models": models,
    "datasets": datasets,
    "recipes": recipes,
    "activations": activations,
    "initializers": initializers,
    "norms": norms,
    "preprocessing": preprocessing,
    "augmentations": augmentations,
    "optimizers": optimizers,
    "schedules": schedules,
    "penalties": penalties,
    "tasks": tasks,
    "experiments": experiments,
}


def rows(family: str) -> list[dict]:
    if family not in FAMILIES:
        raise ConfigError(suggest(family, list(FAMILIES), "family to list"))
    return FAMILIES[family]()
