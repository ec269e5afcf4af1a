"""trainlab's speed recipes against standard PyTorch pipelines, in one process on the same device.

The baselines are written the way most PyTorch code trains Fashion-MNIST: a Dataset with per-sample
transforms, a DataLoader with worker processes, and a plain loop that reads `loss.item()` each step.

    python bench/train_speed.py [--device cuda] [--recipe speedrun] [--seeds 5] [--quick]

trainlab's time is the speed goals' measure, `time_to_result_seconds`: from the first touch of the
weights to the end of the test evaluation; data loading and the one-off compile warm-up are printed
apart. A baseline's time runs from its first batch to the end of its test evaluation.

`--quick` is a tiny CPU run for CI: it checks that every pipeline trains (accuracy above chance), not speed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainlab.config import load_config
from trainlab.data.datasets import load_dataset
from trainlab.device import synchronize
from trainlab.models import create_model
from trainlab.run import train

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels / 255


class PerSampleDataset(Dataset):
    """ToTensor + Normalize per sample, optionally pad-4 random crop and flip, as torchvision users do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = (self.images[i].float() / 255 - MEAN) / STD  # (1, 28, 28)
        if self.augment:
            x = F.pad(x, (4, 4, 4, 4))
            top, left = torch.randint(0, 9, (2,)).tolist()
            x = x[:, top : top + 28, left : left + 28]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, self.labels[i]


def tutorial_cnn() -> nn.Module:
    """The TensorFlow tutorial's two-conv CNN."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def lecture_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10)
    )


def baseline(name, model, data, n_train, n_test, epochs, device, workers, augment=False, sgd_onecycle=False):
    """Train with a standard DataLoader loop; returns (test accuracy, seconds incl. test evaluation)."""
    model = model.to(device)
    bf16 = device.type == "cuda" and sgd_onecycle
    train_set = PerSampleDataset(data.train_images[:n_train], data.train_labels[:n_train], augment)
    test_set = PerSampleDataset(data.test_images[:n_test], data.test_labels[:n_test], False)
    loader = DataLoader(train_set, batch_size=128, shuffle=True, num_workers=workers, drop_last=True)
    if sgd_onecycle:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * len(loader))
    else:
        optimizer, schedule = torch.optim.Adam(model.parameters(), lr=1e-3), None
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule:
                schedule.step()
            loss.item()  # what a logging loop does each step
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        for x, y in DataLoader(test_set, batch_size=1000, num_workers=workers):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    synchronize(device)
    return correct / len(test_set), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipe", default=None, help="default: speedrun on CUDA, cpu-fast on CPU")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=1, help="run the recipe with seeds 0..N-1")
    parser.add_argument("--plot", help="also draw test accuracy against seconds to this PNG")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--baselines", help="which baselines to run (default: mlp,cnn,resnet18; --quick: mlp,cnn)"
    )
    parser.add_argument(
        "--baseline-epochs", type=int, help="override the baselines' epochs (e.g. 1 on a CPU)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = args.recipe or ("speedrun" if device.type == "cuda" else "cpu-fast")
    data = load_dataset("fashion-mnist")
    n_train, n_test = (1000, 500) if args.quick else (60000, 10000)
    scale = {"epochs": 1} if args.quick else {"epochs": args.baseline_epochs} if args.baseline_epochs else {}

    rows = []
    overrides = {"train.device": str(device)}
    if args.quick:
        overrides.update(
            {
                "data.limit_train": n_train,
                "train.epochs": 2,
                "data.val_size": 500,
                "data.batch_size": 64,
                "train.compile": False,
            }
        )
    runs = []
    for seed in range(args.seeds):
        s = train(load_config(recipe, {**overrides, "train.seed": seed}), None, progress=False).summary
        runs.append(s)
        print(
            f"seed {seed}: trainlab --recipe {recipe}, test accuracy {s['test_accuracy']:.4f}, time to "
            f"result {s['time_to_result_seconds']:.2f} s (epochs {s['train_seconds']:.2f} s, final eval "
            f"{s['eval_seconds']:.2f} s); load {s['load_seconds']:.2f} s, compile warm-up "
            f"{s['compile_seconds']:.2f} s",
            flush=True,
        )
    accuracies = torch.tensor([s["test_accuracy"] for s in runs], dtype=torch.float64)
    seconds = torch.tensor([s["time_to_result_seconds"] for s in runs], dtype=torch.float64)
    if args.seeds > 1:
        print(
            f"{args.seeds} seeds: accuracy mean {accuracies.mean():.4f} std {accuracies.std():.4f} "
            f"min {accuracies.min():.4f}; time to result mean {seconds.mean():.2f} s, "
            f"max {seconds.max():.2f} s"
        )
    name = f"trainlab --recipe {recipe}" + (f" (mean of {args.seeds} seeds)" if args.seeds > 1 else "")
    rows.append((name, float(accuracies.mean()), float(seconds.mean())))

    torch.manual_seed(0)
    baselines = {
        "mlp": ("MLP 784-100-50-10, Adam", lecture_mlp, 10, {}),
        "cnn": ("TF-tutorial 2-conv CNN, Adam", tutorial_cnn, 10, {}),
        "resnet18": ("ResNet-18 small, one-cycle SGD, crop+flip", lambda: create_model("resnet18"), 15,
                     dict(augment=True, sgd_onecycle=True)),
    }  # fmt: skip
    for key in (args.baselines or ("mlp,cnn" if args.quick else "mlp,cnn,resnet18")).split(","):
        name, make, epochs, kw = baselines[key]
        accuracy, seconds = baseline(
            name, make(), data, n_train, n_test, scale.get("epochs", epochs), device, args.workers, **kw
        )
        rows.append((f"PyTorch DataLoader: {name}, {scale.get('epochs', epochs)} ep", accuracy, seconds))

    ours = rows[0][2]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} cores"
    print(f"device {device} ({where}), torch {torch.__version__}{', QUICK' if args.quick else ''}")
    print(f"{'pipeline':<72} {'test acc':>8} {'seconds':>8} {'ratio':>7}")
    for name, accuracy, seconds in rows:
        print(f"{name:<72} {accuracy:8.4f} {seconds:8.2f} {seconds / ours:6.1f}x")
    print("seconds: first batch (trainlab: first touch of the weights) to the end of the test evaluation")
    print("ratio = pipeline's seconds / trainlab's seconds")
    if args.plot:
        plot(rows, f"{device} ({where}), torch {torch.__version__}", args.plot)
    if args.quick:
        assert all(accuracy > 0.3 for _, accuracy, _ in rows), "a pipeline did not learn"


def plot(rows: list[tuple[str, float, float]], where: str, path: str) -> None:
    """Test accuracy against seconds, one labelled point per pipeline."""
    from trainlab.report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, accuracy, seconds) in enumerate(rows):
        ax.scatter(seconds, 100 * accuracy, color="C3" if i == 0 else "C0", zorder=3)
        ax.annotate(name.replace("PyTorch DataLoader: ", ""), (seconds, 100 * accuracy), fontsize=7,
                    xytext=(5, -3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter("{x:g}")
    ax.xaxis.set_minor_formatter("{x:g}")
    ax.set_xlabel("seconds to the test accuracy (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST: trainlab (red) and standard PyTorch loops\n{where}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, Path(path))


if __name__ == "__main__":
    main()
