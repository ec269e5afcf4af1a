"""Data-parallel scaling: training throughput (images/s) of the cpu-fast recipe on 1 and N processes,
each with one thread, on Fashion-MNIST; prints the scaling ratio (goal on CPU: >= 1.7x for 2 processes).

    python bench/ddp_scaling.py [--procs 1,2] [--images 20480] [--epochs 1] [--device cpu|cuda]
                                [--torchrun-single] [--recipe cpu-fast] [--dataset fashion-mnist]

Each run is a whole `trainlab train` (1 process: the plain run; N: `trainlab train --nproc N`), with the
global batch of the recipe, no validation split (so that the epoch time is training alone) and one CPU
thread per process. Throughput is the images trained over `train_seconds` of summary.json, the epochs'
wall time: start-up, data loading, the final evaluation and the report are not in it.
`--torchrun-single` adds a row for torchrun with one process (the issue's GPU goal: within 5% of the
plain run; with one process trainlab starts no process group, so the two run the same code).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int | None, args: argparse.Namespace, out: Path) -> dict:
    """One `trainlab train` of cpu-fast; procs None is the plain run, else torchrun with procs ranks."""
    command = [
        sys.executable, "-m", "trainlab", "train", "--recipe", args.recipe, "--dataset", args.dataset,
        "--epochs", str(args.epochs),
        "--limit-train", str(args.images), "--set", "data.val_size=0", "--set", "train.threads=1",
        "--device", args.device, "--out", str(out), "--quiet", *(["--nproc", str(procs)] if procs else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    batch = config["data"]["batch_size"]
    images = summary["epochs_run"] * (args.images // batch) * batch  # drop_last: whole batches only
    return {"images_per_s": images / summary["train_seconds"], "seconds": summary["train_seconds"], **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts (1: the plain run)")
    parser.add_argument("--images", type=int, default=20480, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--recipe", default="cpu-fast")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torchrun-single", action="store_true", help="also torchrun with 1 process")
    args = parser.parse_args()
    counts = [int(p) for p in args.procs.split(",")]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            rows[str(n)] = run(None if n == 1 else n, args, Path(tmp) / f"procs-{n}")
        if args.torchrun_single:
            rows["torchrun 1"] = run(1, args, Path(tmp) / "torchrun-1")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    what = f"{args.recipe} on {args.dataset}, {args.device}, {args.images} images x {args.epochs} epoch(s)"
    print(f"{what}, 1 thread per process")
    print(f"{'processes':>12} {'images/s':>10} {'train s':>8} {'test acc':>9}")
    for name, row in rows.items():
        accuracy = row.get("test_accuracy", float("nan"))
        print(f"{name:>12} {row['images_per_s']:10.0f} {row['seconds']:8.2f} {accuracy:9.4f}")
    if "1" in rows:
        for name, row in rows.items():
            if name != "1":
                ratio = row["images_per_s"] / rows["1"]["images_per_s"]
                print(f"scaling {name} vs 1 process: {ratio:.2f}x")
    print(f"load average (1, 5, 15 min): {load}")


if __name__ == "__main__":
    main()
