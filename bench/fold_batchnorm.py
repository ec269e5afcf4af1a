"""Inference speed-up from folding BatchNorm into the preceding conv / linear layer (trainlab.nn.norm).

At test time BN is a per-channel affine map, so folding removes one pass over every activation tensor.
Times eval-mode forwards at batch 256 on CPU for the default model and a deeper, wider one, and checks
that the folded outputs equal the unfolded ones.

    .venv/bin/python bench/fold_batchnorm.py [--batch 256] [--repeats 10] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from trainlab.models import create_model
from trainlab.nn.norm import fold_batchnorm

MODELS = {
    "cnn (default)": {},
    "cnn deeper (64-128-256-512)": {"widths": (64, 128, 256, 512)},
}


def median_forward_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {cpu}, {torch.get_num_threads()} threads")
    x = torch.rand(args.batch, 1, 28, 28)
    for name, options in MODELS.items():
        model = create_model("cnn", **options)
        model.train()
        with torch.no_grad():
            model(x)  # move the running statistics away from (0, 1)
        model.eval()
        folded = fold_batchnorm(model)
        with torch.no_grad():
            err = (folded(x) - model(x)).abs().max().item()
        # interleave the two so background load hits both alike
        t_bn, t_fold = [], []
        for _ in range(2):
            t_bn.append(median_forward_ms(model, x, args.repeats))
            t_fold.append(median_forward_ms(folded, x, args.repeats))
        bn, fold = min(t_bn), min(t_fold)
        print(
            f"{name:30s} batch {args.batch}: with BN {bn:7.2f} ms, folded {fold:7.2f} ms, "
            f"speed-up {bn / fold:.2f}x, max |diff| {err:.1e}"
        )


if __name__ == "__main__":
    main()
