"""M vectorised ensemble members against M sequential runs: seconds per training epoch through
`trainlab.train` (the cpu-fast recipe's SpeedNet by default), printed as ratios to one member's epoch.

    python bench/ensemble_speed.py [--members 5] [--images 10000] [--epochs 2] [--threads 2]
                                   [--channels-last] [--vmap]

Rows: one member (a plain run), the M members grouped (ensemble.engine=grouped, one network of grouped
convolutions), and the M members one after another within each step (engine=sequential, the same work
as M runs); the goal on 2 CPU cores is grouped <= 3.5x one member (sequential is about Mx). Each row is
the fastest epoch after the first (the first warms the allocator and oneDNN's kernel choice). `--vmap`
adds a forward+backward step of torch.func.stack_module_state + vmap, the other way to vectorise, for
comparison (docs/ensembles.md explains the choice).

`--roofline` asks whether the goal is reachable on this machine at all. M members do M times one
member's arithmetic, which no batching removes: they cannot train faster than that arithmetic at the
machine's peak rate. It times a large float32 matmul (the fastest kernel there is: an upper bound on any
convolution's rate), counts one member's training arithmetic per epoch (3 x 2 x the forward
multiply-accumulates per image: forward, and a backward of about twice the forward), and prints the
lowest possible ratio M x (one member's achieved rate / peak rate). A bound above 3.5 means no
implementation meets 3.5x on this CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
import torch.nn.functional as F

import trainlab


def epoch_seconds(args: argparse.Namespace, members: int, engine: str) -> float:
    overrides = {
        "data.limit_train": args.images, "data.val_size": 0, "train.epochs": args.epochs,
        "train.tta": False, "train.threads": args.threads, "train.device": args.device,
        "ensemble.members": members, "ensemble.engine": engine, "train.channels_last": args.channels_last,
    }  # fmt: skip
    result = trainlab.train(trainlab.load_config(args.recipe, overrides), None, progress=False)
    return min(h["seconds"] for h in result.history[1:] or result.history)


def step_seconds(step, repeats: int = 5) -> float:
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def vmap_comparison(args: argparse.Namespace) -> None:
    """One forward + backward of M members at batch 256: plain (one member), grouped, vmap."""
    from torch.func import functional_call, stack_module_state, vmap

    from trainlab.ensemble.grouped import group_members
    from trainlab.models.speednet import SpeedNet

    m = args.members
    members = [SpeedNet(1, 10, (32, 64, 128), act="relu") for _ in range(m)]
    x = torch.randn(256, m, 1, 28, 28)
    params, buffers = stack_module_state(members)
    skeleton = copy.deepcopy(members[0]).to("meta")

    def member_forward(p, b, xm):
        return functional_call(skeleton, (p, b), (xm,))

    grouped = group_members(members)
    steps = {
        "one member": lambda: F.cross_entropy(
            members[0](x[:, 0]), torch.zeros(256, dtype=torch.long)
        ).backward(),
        "grouped": lambda: grouped(x.flatten(1, 2)).sum().backward(),
        "vmap": lambda: vmap(member_forward, in_dims=(0, 0, 1))(params, buffers, x).sum().backward(),
    }
    one = None
    for name, step in steps.items():
        seconds = step_seconds(step)
        one = one or seconds
        print(f"step {name:>12}  {seconds * 1000:8.1f} ms  {seconds / one:5.2f}x one member")


def peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best float32 matmul rate (GFLOP/s) of `size` x `size` matrices with the current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = step_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def roofline(args: argparse.Namespace, one_epoch: float) -> None:
    from trainlab.config import load_config
    from trainlab.models.factory import model_from_config
    from trainlab.models.summary import summarize

    cfg = load_config(args.recipe)
    macs = summarize(model_from_config(cfg, (1, 28, 28), 10), (1, 28, 28)).total_macs
    achieved = 3 * 2 * macs * args.images / one_epoch / 1e9
    peak = max(peak_gflops() for _ in range(3))
    print(
        f"roofline: {macs / 1e6:.1f} M MACs per image forward; one member trains at {achieved:.1f} GFLOP/s, "
        f"the peak float32 matmul runs at {peak:.1f} GFLOP/s ({achieved / peak:.0%} of it); "
        f"{args.members} members cannot take less than {args.members * achieved / peak:.2f}x one member"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu-fast")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--images", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the fastest epoch after the first counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last=true, every row")
    parser.add_argument("--no-sequential", action="store_true", help="skip the sequential row")
    parser.add_argument("--vmap", action="store_true", help="also time one step of torch.func's vmap")
    parser.add_argument("--roofline", action="store_true", help="the lowest ratio this CPU's peak allows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"{args.recipe}, {args.images} images, {args.threads} threads, {args.device}, torch "
          f"{torch.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    one = epoch_seconds(args, 1, "auto")
    rows = [("1 member", one), (f"{args.members} grouped", epoch_seconds(args, args.members, "grouped"))]
    if not args.no_sequential:
        rows.append((f"{args.members} sequential", epoch_seconds(args, args.members, "sequential")))
    for name, seconds in rows:
        print(f"{name:>14}  {seconds:7.2f} s/epoch  {seconds / one:5.2f}x one member")
    if args.vmap:
        vmap_comparison(args)
    if args.roofline:
        roofline(args, one)


if __name__ == "__main__":
    main()
