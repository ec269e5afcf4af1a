"""trainlab: the training-neural-networks curriculum as fast, tested software.

The public API, imported lazily so that `trainlab --help` starts fast:

    trainlab.load_dataset("fashion-mnist")
    cfg = trainlab.load_config("default", ["optim.lr=0.1"]);  trainlab.train(cfg, "runs/x")
    trainlab.create_task("regression", loss="l1");  trainlab.evaluate_run("runs/x")
    trainlab.create_model("resnet18", in_channels=1, num_classes=10, act="gelu", norm="group")
    trainlab.create_activation("leaky_relu", slope=0.1)
    trainlab.init_model(model, "kaiming_normal");  trainlab.fold_batchnorm(model)
    trainlab.Standardizer("zca_whiten");  trainlab.Augment("hflip,translate=2")
    trainlab.export_onnx("runs/x", "model.onnx");  trainlab.compare_runs(["runs/x", "runs/y"], "c.html")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_dataset": "trainlab.data.datasets",
    "load_config": "trainlab.config",
    "Config": "trainlab.config",
    "train": "trainlab.dispatch",
    "RunResult": "trainlab.run",
    "create_task": "trainlab.tasks",
    "list_tasks": "trainlab.tasks",
    "Task": "trainlab.tasks",
    "Predictor": "trainlab.inference",
    # a run directory or an ensemble directory (ensemble.json): the same entry points as the CLI's
    "evaluate_run": ("trainlab.ensemble.evaluate", "evaluate_directory"),
    "predict_files": "trainlab.predict",
    "Trainer": "trainlab.training.trainer",
    "Callback": "trainlab.training.callbacks",
    "create_model": "trainlab.models",
    "list_models": "trainlab.models",
    "create_activation": "trainlab.nn.activations",
    "init_model": "trainlab.nn.init",
    "create_norm": "trainlab.nn.norm",
    "fold_batchnorm": "trainlab.nn.norm",
    "create_penalty": "trainlab.nn.regularize",
    "Standardizer": "trainlab.data.preprocess",
    "Augment": "trainlab.data.augment",
    "load_trained": ("trainlab.ensemble.evaluate", "load_directory"),
    "run_experiment": "trainlab.experiments",
    "export_onnx": "trainlab.export",
    "compare_runs": "trainlab.report.compare",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'trainlab' has no attribute {name!r}")
