"""trainlab's Trainer against a minimal hand-written loop: same model, same device-resident data,
same preprocessing and optimiser. Prints seconds per epoch for each and the ratio (goal: within 5%).

    python bench/trainer_overhead.py [--device cpu|cuda] [--model cnn] [--images 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from trainlab.data.datasets import load_dataset
from trainlab.data.loader import DeviceLoader
from trainlab.data.preprocess import Standardizer
from trainlab.device import synchronize
from trainlab.models import create_model
from trainlab.training.trainer import Trainer


def hand_loop(model, optimizer, images, labels, standardizer, batch_size, epochs, device) -> list[float]:
    """The loop a careful PyTorch user writes: shuffled device-resident batches, no per-step sync."""
    times = []
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), device=device, generator=generator)
        for i in range(len(images) // batch_size):
            index = order[i * batch_size : (i + 1) * batch_size]
            x = standardizer(images[index].float().div_(255))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x).float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("fashion-mnist")
    images = data.train_images[: args.images].to(device)
    labels = data.train_labels[: args.images].to(device)
    standardizer = Standardizer("channel_mean_std").fit(images)

    def fresh():
        torch.manual_seed(0)
        model = create_model(args.model).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    results = {}
    for _ in range(2):  # interleave, so that drifting machine load hits both alike
        model, optimizer = fresh()
        results.setdefault("hand-written loop", []).extend(
            hand_loop(model, optimizer, images, labels, standardizer, args.batch_size, args.epochs, device)
        )
        model, optimizer = fresh()
        trainer = Trainer(model, optimizer, epochs=args.epochs, transform=standardizer, device=device)
        trainer.fit(DeviceLoader(images, labels, args.batch_size, shuffle=True, drop_last=True))
        results.setdefault("trainlab Trainer", []).extend(h["seconds"] for h in trainer.history)

    best = {name: min(times) for name, times in results.items()}
    print(
        f"device {device}, model {args.model}, {args.images} images, batch {args.batch_size}, "
        f"torch {torch.__version__}"
    )
    for name, seconds in best.items():
        print(f"{name:>18}: {seconds:.3f} s/epoch (best of {len(results[name])})")
    ratio = best["trainlab Trainer"] / best["hand-written loop"]
    print(f"ratio Trainer / hand loop: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
