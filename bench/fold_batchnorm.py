"""Inference speed-up from folding BatchNorm into the conv / linear layer that feeds it (trainlab.nn.norm).

At test time BN is a per-channel affine map, so folding removes one pass over every normalised activation
tensor. For one model of each family, built with norm="batch", times eval-mode forwards of the model
and of `fold_batchnorm(model)` side by side (alternating, so background load hits both alike), and
prints the BNs left, the largest output difference relative to the largest output, and the speed-up:
the median over rounds of each round's ratio of median times, with the rounds' range, since on a
shared CPU one round's ratio can be off by 20% or more.

    .venv/bin/python bench/fold_batchnorm.py [--batch 64] [--rounds 5] [--repeats 5] [--threads N]
        [--models a,b]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from trainlab.models import create_model
from trainlab.nn.norm import fold_batchnorm, is_batchnorm

# one model per family (trainlab/models/*.py), the smallest where a family has several, and resnet50
# for the bottleneck block
FAMILIES = ["mlp", "lenet5", "cnn", "alexnet", "vgg11_bn", "googlenet", "resnet18", "resnet50", "speednet"]


def forward_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def timed_round(model: torch.nn.Module, folded: torch.nn.Module, x: torch.Tensor, repeats: int):
    """(median seconds with BN, median seconds folded) over `repeats` alternating forwards."""
    times = [(forward_seconds(model, x), forward_seconds(folded, x)) for _ in range(repeats)]
    return tuple(median(list(t)) for t in zip(*times))


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="forwards of each model per round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models", default=",".join(FAMILIES), help="comma-separated model names")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {cpu}, {torch.get_num_threads()} threads, batch {args.batch} x 1x28x28"
    )
    x = torch.rand(args.batch, 1, 28, 28)
    for name in args.models.split(","):
        model = create_model(name, norm="batch").train()
        with torch.no_grad():
            model(x)  # move the running statistics away from (0, 1)
        model.eval()
        folded = fold_batchnorm(model)
        bns = [sum(map(is_batchnorm, m.modules())) for m in (model, folded)]
        with torch.inference_mode():
            y = model(x)
            rel_diff = ((folded(x) - y).abs().max() / y.abs().max()).item()
            forward_seconds(model, x), forward_seconds(folded, x)  # warm-up
            rounds = [timed_round(model, folded, x, args.repeats) for _ in range(args.rounds)]
        t_bn, t_fold = (1e3 * median(list(t)) for t in zip(*rounds))
        ratios = sorted(bn / fold for bn, fold in rounds)
        print(
            f"{name:10s} BN {bns[0]:3d} -> {bns[1]}: with BN {t_bn:8.2f} ms, folded {t_fold:8.2f} ms, "
            f"speed-up {median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}), "
            f"max |diff| / max |y| {rel_diff:.1e}"
        )


if __name__ == "__main__":
    main()
