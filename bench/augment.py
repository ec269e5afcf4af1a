"""Augmentation throughput: trainlab against kornia, torchvision v2 and Albumentations (issue 7).

Images per second for the typical pipeline (flip + pad_crop + color_jitter + rotate/shear) and for
every trainlab operation, in batches of 512 at 28x28x1, 32x32x3 and 224x224x3. Peers run in the same
process where installed (`pip install trainlab[peers]`), each as its users run it: kornia and
torchvision v2 on float batches (torchvision draws ONE parameter set per call, not per sample),
Albumentations per uint8 HWC image in a Python loop. trainlab gets float [0, 1] batches, as the
trainer gives it. Each number is the best of a few timed repeats, after a warm-up call, so that a
busy machine disturbs it less; the same rule applies to every library.

    python bench/augment.py [--device cpu|cuda] [--quick] [--json] [--sizes 32x32x3,...] [--batch 512]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from trainlab.data.augment import Augment, list_augmentations
from trainlab.device import synchronize

SIZES = {"28x28x1": (1, 28, 28), "32x32x3": (3, 32, 32), "224x224x3": (3, 224, 224)}
PIPELINE = "hflip,pad_crop=4,color_jitter=0.4,rotate=10,shear=10"
PEER_OPS = ["pipeline", "hflip", "pad_crop", "rotate", "color_jitter", "random_resized_crop"]
QUICK_OPS = ["pipeline", "hflip", "rotate", "color_jitter", "mixup"]


def trainlab_spec(op: str) -> str:
    """The benchmarked spec: the typical pipeline, or one op at its defaults, always applied."""
    if op == "pipeline":
        return PIPELINE
    return {
        "hflip": "hflip",
        "vflip": "vflip",
        "pad_crop": "pad_crop=4",
        "color_jitter": "color_jitter=0.4",
    }.get(op, f"{op}(p=1)")


def kornia_transform(op: str, c: int, h: int, w: int):
    import kornia.augmentation as K

    crop = K.RandomCrop((h, w), padding=4)
    jitter = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    affine = K.RandomAffine(degrees=10, shear=10, p=1.0)
    table = {
        "pipeline": lambda: torch.nn.Sequential(K.RandomHorizontalFlip(), crop, jitter, affine),
        "hflip": lambda: K.RandomHorizontalFlip(),
        "pad_crop": lambda: crop,
        "rotate": lambda: K.RandomRotation(10.0, p=1.0),
        "color_jitter": lambda: jitter,
        "random_resized_crop": lambda: K.RandomResizedCrop((h, w)),
    }
    return table[op]()


def torchvision_transform(op: str, c: int, h: int, w: int):
    from torchvision.transforms import v2

    crop = v2.RandomCrop((h, w), padding=4)
    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    table = {
        "pipeline": lambda: v2.Compose(
            [v2.RandomHorizontalFlip(), crop, jitter, v2.RandomAffine(10, shear=10)]
        ),
        "hflip": lambda: v2.RandomHorizontalFlip(),
        "pad_crop": lambda: crop,
        "rotate": lambda: v2.RandomRotation(10.0),
        "color_jitter": lambda: jitter,
        "random_resized_crop": lambda: v2.RandomResizedCrop((h, w), antialias=False),
    }
    return table[op]()


def albumentations_transform(op: str, c: int, h: int, w: int):
    import albumentations as A

    crop = [A.PadIfNeeded(h + 8, w + 8, border_mode=0, fill=0), A.RandomCrop(h, w)]
    jitter = A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    affine = A.Affine(rotate=(-10, 10), shear={"x": (-10, 10), "y": (0, 0)}, p=1.0)
    table = {
        "pipeline": lambda: A.Compose([A.HorizontalFlip(), *crop, jitter, affine]),
        "hflip": lambda: A.HorizontalFlip(),
        "pad_crop": lambda: A.Compose(crop),
        "rotate": lambda: A.Rotate(limit=10, p=1.0),
        "color_jitter": lambda: jitter,
        "random_resized_crop": lambda: A.RandomResizedCrop((h, w)),
    }
    return table[op]()


def best_rate(
    run: Callable[[], None], n_images: int, device: str, repeats: int, budget_s: float, clock: str = "wall"
) -> float:
    """Images per second: the best of `repeats` timed calls after one warm-up (stops early past budget).

    clock="cpu" counts this process's CPU time instead of wall time: on a machine shared with other jobs
    it leaves out the time the process waits for a core (with 1 thread it equals the wall time of an
    idle machine; with more threads it adds the threads up)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    sync = functools.partial(synchronize, torch.device(device))
    run()
    sync()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = now()
        run()
        sync()
        elapsed = now() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return n_images / best


def measure(library: str, op: str, size: str, args) -> float | None:
    """images/s for one library, op and size; None when the peer cannot run this op at this size."""
    c, h, w = SIZES[size]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, c, h, w, generator=g)
    labels = torch.randint(0, 10, (args.batch,), generator=g)
    if library == "trainlab":
        aug = Augment(trainlab_spec(op), seed=0, num_classes=10, device=args.device)
        x, y = images.to(args.device), labels.to(args.device)
        return best_rate(lambda: aug(x, y), args.batch, args.device, args.repeats, args.budget, args.clock)
    if library == "albumentations":
        transform = albumentations_transform(op, c, h, w)
        n = min(args.batch, 128 if h > 100 else args.batch)  # per image anyway: fewer images at 224
        hwc = [np.ascontiguousarray(im) for im in (images[:n] * 255).byte().permute(0, 2, 3, 1).numpy()]
        return best_rate(
            lambda: [transform(image=im) for im in hwc], n, "cpu", args.repeats, args.budget, args.clock
        )
    build = kornia_transform if library == "kornia" else torchvision_transform
    transform = build(op, c, h, w)
    x = images.to(args.device)
    if hasattr(transform, "to"):
        transform = transform.to(args.device)
    return best_rate(lambda: transform(x), args.batch, args.device, args.repeats, args.budget, args.clock)


def cv2_threads(n: int) -> None:
    """Albumentations runs on OpenCV, which has its own thread pool."""
    if importlib.util.find_spec("cv2"):
        import cv2

        cv2.setNumThreads(n)


def peers(device: str) -> list[str]:
    found = [lib for lib in ("kornia", "torchvision", "albumentations") if importlib.util.find_spec(lib)]
    return [lib for lib in found if not (lib == "albumentations" and device == "cuda")]  # CPU-only library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--quick", action="store_true", help="tiny CI-safe run: batch 64, small sizes, few ops"
    )
    parser.add_argument("--json", action="store_true", help='print {"results": [...]} instead of a table')
    parser.add_argument("--sizes", default=None, help="comma-separated, from " + ",".join(SIZES))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--ops", default=None, help="comma-separated: pipeline and/or registered op names")
    parser.add_argument("--no-peers", action="store_true", help="trainlab only")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="cpu: process CPU time")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.device == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu measures CPU time; GPU work needs --clock wall")
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2_threads(args.threads)
    args.batch = args.batch or (64 if args.quick else 512)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.budget = 0.5 if args.quick else 3.0
    sizes = args.sizes.split(",") if args.sizes else (["28x28x1", "32x32x3"] if args.quick else list(SIZES))
    for size in sizes:
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    ops = (
        args.ops.split(",") if args.ops else QUICK_OPS if args.quick else ["pipeline", *list_augmentations()]
    )
    libraries = ["trainlab"] + ([] if args.no_peers else peers(args.device))

    results = []
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)  # progress
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()}-thread CPU"
    )
    peer_list = ", ".join(libraries[1:]) or "none"
    setup = f"torch {torch.__version__}, {device_name}, batch {args.batch}, {args.clock} clock"
    say(f"{setup}; peers: {peer_list}")
    for size in sizes:
        say(f"\n{size}")
        for op in ops:
            rates = {}
            for library in libraries if op in PEER_OPS else ["trainlab"]:
                try:
                    rate = measure(library, op, size, args)
                except Exception as e:  # a peer that cannot do this op at this size is reported, not fatal
                    if library == "trainlab":
                        raise
                    say(
                        f"  {op:22s} {library:15s} skipped: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                    )
                    continue
                rates[library] = rate
                results.append(
                    {"op": op, "size": size, "device": args.device, "library": library, "images_per_s": rate}
                )
            ratios = "  ".join(
                f"{rates['trainlab'] / r:6.1f}x {lib}" for lib, r in rates.items() if lib != "trainlab"
            )
            say(f"  {op:22s} {rates['trainlab']:12,.0f} img/s  {ratios}")
            for lib, r in rates.items():
                if lib != "trainlab":
                    say(f"  {'':22s} {r:12,.0f} img/s  ({lib})")
    if args.json:
        meta = {
            "torch": torch.__version__,
            "device_name": device_name,
            "batch": args.batch,
            "clock": args.clock,
            "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        print(json.dumps({"results": results, "meta": meta}, indent=1))


if __name__ == "__main__":
    main()
