"""The NumPy engine on real data: what `trainlab scratch train` and `trainlab scratch gradcheck` call.

    summary = scratch_train(ScratchSettings(model="mlp", widths=(100, 50), epochs=10), out="runs/mlp")

The pipeline is `trainlab train`'s, with trainlab.scratch in place of torch for the model and the loop:
dataset (trainlab.data.datasets) -> the same seeded train/validation split and limit_train ->
channel_mean_std standardisation fitted on the training images (trainlab.data.preprocess) -> NumPy
float32 arrays -> `MLP` or `lenet5` -> `fit` with the chosen optimiser -> test evaluation. Torch is used
here only to read and preprocess the data, as the torch pipeline does; the engine never sees a tensor.

Run directory (each file written atomically by trainlab.io):
    config.json          the resolved settings
    metrics.csv          one row per epoch: train_loss, val_loss, val_accuracy, seconds, images_per_s
    model.safetensors    the weights and batch-norm buffers, "model.<layer>.<name>", and the fitted
                         "preprocess.mean" and "preprocess.std" (safetensors.numpy, never pickle), with
                         the settings in its metadata
    curves.png           loss and accuracy against epoch (trainlab.report.figures.curves_figure)
    summary.json         test accuracy and loss, best validation accuracy, timing; written last
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.errors import ConfigError
from trainlab.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.rundir import clear_for_new_run, locked_run_dir
from trainlab.scratch.conv import lenet5
from trainlab.scratch.gradcheck import gradient_check
from trainlab.scratch.model import MLP, Sequential
from trainlab.scratch.optim import OPTIMIZERS, create_optimizer
from trainlab.scratch.train import evaluate, fit

MODELS = ("mlp", "lenet5")
DEFAULT_ACT = {"mlp": "relu", "lenet5": "tanh"}  # the lecture MLP's and LeCun et al. 1998's


@dataclass(frozen=True)
class ScratchSettings:
    """Everything a scratch run depends on. lr is per batch of `batch_size` (the losses are means)."""

    dataset: str = "fashion-mnist"
    model: str = "mlp"
    widths: tuple[int, ...] = (100, 50)  # hidden layers of the MLP (LeNet-5's are fixed)
    act: str | None = None  # None: DEFAULT_ACT[model]
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "momentum"  # momentum 0.9, as torch.optim.SGD(momentum=0.9)
    seed: int = 0
    limit_train: int | None = None  # the first N images of the training split
    val_size: int = 5000  # held out of the training set, seeded, as `trainlab train` does

    def resolved(self) -> ScratchSettings:
        """Checked and canonical: ConfigError naming the bad value and what was expected."""
        if self.model not in MODELS:
            raise ConfigError(
                f"--model {self.model!r} is not a scratch model (expected one of {list(MODELS)})"
            )
        act = FORMULAS.canonical(self.act or DEFAULT_ACT[self.model])
        optimizer = OPTIMIZERS.canonical(self.optimizer)
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ConfigError(
                f"--widths {list(self.widths)} is not valid (expected positive integers, e.g. 100,50)"
            )
        for name, value, low in (("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
                                 ("val_size", self.val_size, 0), ("seed", self.seed, 0)):  # fmt: skip
            if value < low:
                raise ConfigError(f"{name}={value} is not valid (expected an integer >= {low})")
        if self.limit_train is not None and self.limit_train < 1:
            raise ConfigError(f"limit_train={self.limit_train} is not valid (expected a positive integer)")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} is not valid (expected > 0)")
        widths = tuple(int(w) for w in self.widths)
        return ScratchSettings(**{**asdict(self), "act": act, "optimizer": optimizer, "widths": widths})


def parse_widths(text: str) -> tuple[int, ...]:
    """ "100,50" -> (100, 50); ConfigError for anything but comma-separated positive integers."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ConfigError(
            f"--widths {text!r} is not valid (expected comma-separated positive integers, e.g. 100,50)"
        )
    return widths


@dataclass
class ArraySplits:
    """Preprocessed float32 NCHW images and int64 labels of a run's three splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    preprocess: dict[str, np.ndarray]  # the fitted channel mean and std, (1, C, 1, 1) each


def load_arrays(settings: ScratchSettings) -> ArraySplits:
    """The torch pipeline's data, as NumPy: split_train_val, limit_train, then channel_mean_std fitted on
    the (limited) training images, as make_loaders and the Standardizer do for `trainlab train`."""
    from trainlab.data.datasets import load_dataset, split_train_val
    from trainlab.data.preprocess import Standardizer

    data = load_dataset(settings.dataset)
    if data.streamed:
        raise ConfigError(
            f"dataset {settings.dataset!r} is streamed from disk; the scratch engine needs it in memory"
        )
    train_idx, val_idx = split_train_val(len(data.train_images), settings.val_size, settings.seed)
    if settings.limit_train is not None:
        train_idx = train_idx[: settings.limit_train]
    standardizer = Standardizer("channel_mean_std").fit(data.train_images[train_idx])

    def arrays(images, labels, idx=None) -> tuple[np.ndarray, np.ndarray]:
        images, labels = (images, labels) if idx is None else (images[idx], labels[idx])
        return standardizer(images).numpy().astype(np.float32), labels.numpy().astype(np.int64)

    train = arrays(data.train_images, data.train_labels, train_idx)
    val = arrays(data.train_images, data.train_labels, val_idx)
    test = arrays(data.test_images, data.test_labels)
    stats = {k: v.numpy() for k, v in standardizer.state_dict().items()}
    return ArraySplits(*train, *val, *test, list(data.classes), stats)


def build_model(settings: ScratchSettings, image_shape: tuple[int, ...], num_classes: int) -> Sequential:
    if settings.model == "lenet5":
        channels, height, width = image_shape
        if height != width:
            raise ConfigError(f"lenet5 takes square images, got {height}x{width}")
        return lenet5(channels, num_classes, height, act=settings.act, seed=settings.seed)
    return MLP(
        [int(np.prod(image_shape)), *settings.widths, num_classes], act=settings.act, seed=settings.seed
    )


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    from trainlab.training.callbacks import format_cell  # the torch runs' metrics.csv format

    columns = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(columns)] + [",".join(format_cell(row.get(c, "")) for c in columns) for row in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


def save_weights(path: Path, model: Sequential, settings: ScratchSettings, preprocess: dict) -> None:
    from safetensors.numpy import save

    tensors = {f"model.{k}": np.ascontiguousarray(v) for k, v in {**model.params, **model.buffers}.items()}
    tensors |= {f"preprocess.{k}": np.ascontiguousarray(v) for k, v in preprocess.items()}
    atomic_write_bytes(path, save(tensors, metadata={"settings": json.dumps(asdict(settings))}))


def scratch_train(
    settings: ScratchSettings, out: Path | str | None = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train and test one scratch model; with `out`, write the run directory. Returns the summary."""
    settings = settings.resolved()
    run_dir = Path(out) if out is not None else None
    started = time.perf_counter()
    splits = load_arrays(settings)  # first: a bad dataset leaves no directory behind
    with contextlib.ExitStack() as stack:
        if run_dir is not None:  # the same rules as `trainlab train`: one writer, no silent overwrite
            stack.enter_context(locked_run_dir(run_dir))
            clear_for_new_run(run_dir, overwrite)
        model = build_model(settings, splits.x_train.shape[1:], len(splits.classes))
        optimizer = create_optimizer(settings.optimizer, model.params, lr=settings.lr)
        if run_dir is not None:
            atomic_write_json(run_dir / "config.json", {**asdict(settings), "engine": "trainlab.scratch"})
        history: list[dict[str, Any]] = []

        def on_epoch(row: dict[str, Any]) -> None:
            history.append(row)
            if run_dir is not None:
                write_metrics(run_dir / "metrics.csv", history)
            if progress:
                print(
                    f"epoch {row['epoch']}/{settings.epochs}  train loss {row['train_loss']:.4f}  "
                    f"val loss {row.get('val_loss', float('nan')):.4f}  val accuracy "
                    f"{row.get('val_accuracy', float('nan')):.4f}  {row['images_per_s']:.0f} images/s",
                    file=sys.stderr,
                    flush=True,
                )

        has_val = len(splits.x_val) > 0
        val = (splits.x_val, splits.y_val) if has_val else (None, None)
        fit(model, optimizer, splits.x_train, splits.y_train, settings.epochs, settings.batch_size,
            settings.seed, *val, on_epoch)  # fmt: skip
        test = evaluate(model, splits.x_test, splits.y_test) if len(splits.x_test) else {}
        summary = {
            **{f"test_{k}": v for k, v in test.items()},
            "best_val_accuracy": max(
                (h["val_accuracy"] for h in history if "val_accuracy" in h), default=None
            ),
            "epochs_run": len(history),
            "train_seconds": sum(h["seconds"] for h in history),
            "train_images_per_s": len(splits.x_train) * len(history) / sum(h["seconds"] for h in history),
            "total_seconds": time.perf_counter() - started,
            "train_size": len(splits.x_train),
            "dataset": settings.dataset,
            "model": settings.model,
            "engine": "trainlab.scratch",
            "num_parameters": int(sum(p.size for p in model.params.values())),
            "numpy_version": np.__version__,
            "seed": settings.seed,
        }
        if run_dir is not None:
            from trainlab.report.figures import curves_figure, save_figure

            save_weights(run_dir / "model.safetensors", model, settings, splits.preprocess)
            save_figure(curves_figure(history), run_dir / "curves.png")
            atomic_write_json(run_dir / "summary.json", summary)  # last: it marks the run finished
        return summary


def default_gradcheck_network(dtype: Any = np.float64) -> Sequential:
    """The lecture MLP 784-100-50-10 with ReLU, He init, seed 0: `trainlab scratch train`'s default."""
    return MLP([784, 100, 50, 10], act="relu", seed=0, dtype=dtype)


def gradcheck_rows(samples: int | None = 200, batch: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """One row per parameter of the default network: layer, its description, parameter, shape and the
    relative error of backprop against centred differences in float64 (trainlab.scratch.gradcheck). The
    batch is `batch` standard-normal 784-pixel inputs with random labels: with continuous inputs no ReLU
    sits within eps = 1e-6 of its kink except with probability ~1e-6 per unit. `samples` entries of each
    array are checked (None: all of them, 2 forward passes each)."""
    rng = np.random.default_rng(seed)
    model = default_gradcheck_network()
    X, y = rng.standard_normal((batch, 784)), rng.integers(0, 10, batch)
    errors = gradient_check(model, X, y, samples=samples, seed=seed)
    rows = []
    for name, error in errors.items():
        index, param = name.split(".")
        rows.append({"layer": int(index), "module": repr(model.layers[int(index)]), "param": param,
                     "shape": list(model.params[name].shape), "relative_error": error})  # fmt: skip
    return rows
