"""onnxruntime against torch on CPU, side by side: the same run's graph (trainlab.export) and its torch
eval path (trainlab.predict.load_trained: Predictor.outputs, preprocessing included), on the same
Fashion-MNIST test images and the same thread count.

- latency at batch 1: the median of `--calls` single-image calls, in ms;
- throughput at batch 256: images/s of one call on 256 images.

A round times torch then onnxruntime for each measure, so background load on a shared machine hits
both alike; after one warm-up round, each ratio printed is the median over rounds of that round's
torch / onnxruntime (above 1: onnxruntime is faster), with the rounds' range. The models are
untrained (speed does not depend on the weights' values) and saved as trainlab.run saves a finished
run's model.safetensors; `--run DIR` times a real run instead.

    .venv/bin/python bench/export_speed.py [--models cnn,speednet,resnet18] [--threads N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

import trainlab
from trainlab.data.datasets import load_dataset
from trainlab.data.preprocess import Standardizer
from trainlab.export import export_onnx, onnx_outputs, onnx_session
from trainlab.models import model_from_config
from trainlab.predict import load_trained
from trainlab.training.checkpoint import prefixed, save_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,speednet,resnet18", help="comma-separated model names")
    parser.add_argument("--run", action="append", default=[], metavar="DIR", help="a finished run instead")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime threads")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up")
    parser.add_argument("--calls", type=int, default=50, help="batch-1 calls per round")
    return parser.parse_args()


def untrained_run(run_dir: Path, model: str, data) -> Path:
    """model.safetensors as trainlab.run writes it: weights, fitted preprocessing, config, classes."""
    run_dir.mkdir()
    cfg = trainlab.load_config(None, {"data.dataset": data.name, "model.name": model})
    standardizer = Standardizer(cfg.data.preprocess).fit(data.train_images[:2000])
    net = model_from_config(cfg, tuple(data.image_shape), data.num_classes)
    meta = {"config": cfg.to_dict(), "classes": data.classes, "image_shape": list(data.image_shape)}
    tensors = {**prefixed("model", net.state_dict()), **prefixed("preprocess", standardizer.state_dict())}
    save_checkpoint(run_dir / "model.safetensors", tensors, meta)
    return run_dir


def seconds(run, images: torch.Tensor, repeats: int = 1) -> float:
    """The median wall time of `repeats` calls of `run(images)`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(run_dir: Path, out: Path, images: torch.Tensor, args: argparse.Namespace) -> dict[str, list[float]]:
    trained = load_trained(run_dir, device="cpu")
    path = export_onnx(run_dir, out).path
    session = onnx_session(path, threads=args.threads)
    one, batch = images[:1], images[:256]
    paths = {"torch": trained.outputs, "onnxruntime": lambda x: onnx_outputs(session, x)}
    rounds: dict[str, list[float]] = {f"{m} {p}": [] for m in ("latency", "throughput") for p in paths}
    for round_ in range(args.rounds + 1):
        for name, run in paths.items():
            latency = seconds(run, one, args.calls)
            throughput = len(batch) / seconds(run, batch)
            if round_:  # round 0 warms up (allocations, onnxruntime's first-run graph work)
                rounds[f"latency {name}"].append(latency * 1e3)
                rounds[f"throughput {name}"].append(throughput)
    return rounds


def ratio_line(label: str, torch_values: list[float], ort_values: list[float], higher_is_better: bool) -> str:
    ratios = [(o / t if higher_is_better else t / o) for t, o in zip(torch_values, ort_values)]
    medians = (
        f"torch {statistics.median(torch_values):9.2f}  onnxruntime {statistics.median(ort_values):9.2f}"
    )
    spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
    return f"{label} {medians}  onnxruntime speed-up {statistics.median(ratios):5.2f}x {spread}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; median of {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.run] or [
            untrained_run(Path(tmp) / name, name, data) for name in args.models.split(",")
        ]
        for i, run_dir in enumerate(runs):
            r = bench(run_dir, Path(tmp) / f"{i}.onnx", data.test_images, args)
            print(f"{run_dir.name}:")
            print(ratio_line("  batch 1 latency, ms:", r["latency torch"], r["latency onnxruntime"], False))
            print(
                ratio_line("  batch 256, images/s:", r["throughput torch"], r["throughput onnxruntime"], True)
            )


if __name__ == "__main__":
    main()
