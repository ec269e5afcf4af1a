"""`import trainlab; trainlab.X` works in any import order: after every submodule has been imported, each
public name is still the documented object, not a subpackage that happens to share its name (as
`trainlab.train` once became once `trainlab.train.trainer` was imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trainlab

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys, types
    import trainlab

    if sys.argv[2] == "submodules-first":
        for info in pkgutil.walk_packages(trainlab.__path__, "trainlab."):
            importlib.import_module(info.name)
    for name in trainlab.__all__:
        obj = getattr(trainlab, name)
        assert not isinstance(obj, types.ModuleType), f"trainlab.{name} is a module"
        module, attribute = trainlab._API[name] if isinstance(trainlab._API[name], tuple) else (
            trainlab._API[name], name)
        assert obj is getattr(importlib.import_module(module), attribute), name

    # The calls README and docs make.
    small = {"data.dataset": "mnist", "data.limit_train": 128, "data.val_size": 32, "data.batch_size": 64,
             "train.epochs": 1, "train.device": "cpu", "model.widths": [4, 4, 8]}
    result = trainlab.train(trainlab.load_config("default", small), sys.argv[1], progress=False)
    evaluated = trainlab.evaluate_run(sys.argv[1], device="cpu")
    assert evaluated["test_accuracy"] == result.summary["test_accuracy"]
    trained = trainlab.load_trained(sys.argv[1], device="cpu")
    assert trained.probabilities(trainlab.load_dataset("mnist").test_images[:2]).shape == (2, 10)
    # An ensemble directory goes through the same two calls (docs/ensembles.md).
    two = trainlab.load_config("default", {**small, "ensemble.members": 2})
    ensemble = trainlab.train(two, sys.argv[1] + "-ens", progress=False)
    evaluated = trainlab.evaluate_run(sys.argv[1] + "-ens", device="cpu")
    assert evaluated["ensemble_members"] == 2
    assert evaluated["test_accuracy"] == ensemble.summary["test_accuracy"]
    members = trainlab.load_trained(sys.argv[1] + "-ens", device="cpu")
    assert members.probabilities(trainlab.load_dataset("mnist").test_images[:2]).shape == (2, 10)
    trainlab.create_activation("leaky_relu", slope=0.1)
    model = trainlab.create_model("resnet18", in_channels=1, num_classes=10, act="leaky_relu", norm="group")
    trainlab.init_model(model, "kaiming_normal")
    trainlab.create_task("regression", loss="l1")
    exported = trainlab.export_onnx(sys.argv[1], sys.argv[1] + "/model.onnx", progress=False)
    assert exported.max_abs_diff <= 1e-5 * max(1.0, exported.max_abs_output)
    assert issubclass(trainlab.Trainer, object) and issubclass(trainlab.Callback, object)
    print("ok")
    """
)


def test_no_submodule_shadows_a_public_name():
    import pkgutil

    submodules = {info.name.split(".")[1] for info in pkgutil.walk_packages(trainlab.__path__, "trainlab.")}
    assert not submodules & set(trainlab.__all__)


def run_script(tmp_path, order: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run"), order], capture_output=True, text=True
    )


def test_public_api_works_after_every_submodule_is_imported(tiny_mnist, tmp_path):
    done = run_script(tmp_path, "submodules-first")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_public_api_works_when_called_first(tiny_mnist, tmp_path):
    done = run_script(tmp_path, "api-first")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
