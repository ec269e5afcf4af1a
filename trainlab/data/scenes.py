"""fmnist-scenes: Fashion-MNIST items placed on a canvas, with their boxes, instance masks and semantic
masks, for the vision tasks past classification (localisation, detection, semantic and instance
segmentation: the DNN & CNN deck's last slide; COCO's annotation conventions, Lin et al. 2014).

A scene is built in three steps, every one a whole-batch tensor op (a loop runs only over chunks of
scenes and the K item slots):

1. Scale. Each item is resized to a side of L pixels by an antialiased bilinear (triangle) filter, the
   filter of `F.interpolate(mode="bilinear", antialias=True)`, applied to rows and then columns with
   each pass rounded to integers (as PIL does) and its weights rounded to multiples of 2**-12. Every
   partial sum is then an integer below 2**24, so the batched matmul that applies the filter is exact
   in float32 in any summation order: a seed gives the same bytes on every CPU and GPU, which is what
   lets the docs publish each split's SHA-256.
2. Place. A slot draws ATTEMPTS positions at once and keeps the first whose box has an IoU of at most
   `max_iou` with every item placed before it; a slot with none is dropped. Patches land on the canvas
   by index arithmetic: scatters of the item pixels into the flat canvas of the whole chunk.
3. Occlude. Items are drawn in slot order, so item k lies on top of items 0..k-1. A pixel belongs to the
   topmost item whose own (scaled) pixel is above `threshold`; an item left with less than MIN_VISIBLE of
   its own pixels is removed. The boxes are the tight boxes of the visible masks.

All random numbers are drawn on the CPU, so `device="cuda"` gives the CPU's scenes, only faster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainlab.data.datasets import FASHION_CLASSES, SCENE_VARIANTS, ImageDataset, load_dataset, search_roots
from trainlab.errors import ConfigError, DataError
from trainlab.io import atomic_write_bytes

VERSION = 1  # part of the cache key: bump it whenever the generator's output changes
DEFAULTS = {
    "size": 64,  # canvas side, pixels
    "items": (1, 6),  # items per scene, inclusive
    "scale": (0.5, 1.0),  # item side / source side (28 px): 14 to 28 px
    "max_iou": 0.25,  # pairwise box IoU allowed between items of a scene
    "noise": 0.0,  # std of Gaussian pixel noise, as a fraction of full scale (255)
    "clutter": 0,  # fragments of other images pasted under the items: distractors, not objects
    "threshold": 30,  # an item's pixel belongs to its mask when above this grey level
}
VARIANT_ITEMS = {"fmnist-scenes": (1, 6), "fmnist-scenes:localize": (1, 1)}
SPLITS = {"train": 20_000, "val": 2_000, "test": 5_000}
ATTEMPTS = 8  # positions tried per slot before it is dropped
MIN_VISIBLE = 0.5  # of an item's own pixels that must stay visible after occlusion
FRAGMENT = (6, 12)  # clutter fragment side, pixels
WEIGHT_BITS = 12  # resampling weights are multiples of 2**-12
CHUNK = 1024  # scenes per pixel pass (bounds memory; does not change the output)


@dataclass
class Scenes:
    """N scenes of K item slots on an S x S canvas (the shapes of trainlab's dict targets)."""

    images: torch.Tensor  # uint8 (N, 1, S, S)
    labels: torch.Tensor  # int64 (N, K): class 0..9; -1 on the slots past the scene's items
    boxes: torch.Tensor  # float32 (N, K, 4) xyxy pixels: x2 = last column + 1 (COCO); 0 on empty slots
    instances: torch.Tensor  # uint8 (N, S, S): 0 background, k + 1 a visible pixel of item k
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def masks(self) -> torch.Tensor:
        """bool (N, K, S, S): item k's visible pixels."""
        ids = torch.arange(1, self.labels.shape[1] + 1, device=self.instances.device)
        return self.instances[:, None] == ids.view(1, -1, 1, 1).to(self.instances.dtype)

    def semantic(self) -> torch.Tensor:
        """int64 (N, S, S): 0 background, class + 1 on an item's pixels."""
        lookup = torch.cat((self.labels.new_full((len(self), 1), -1), self.labels), 1) + 1  # (N, K + 1)
        return lookup.gather(1, self.instances.long().flatten(1)).view(self.instances.shape)

    def targets(self) -> dict[str, torch.Tensor]:
        return {"labels": self.labels, "boxes": self.boxes, "instances": self.instances}

    def index(self, idx) -> Scenes:
        return Scenes(self.images[idx], self.labels[idx], self.boxes[idx], self.instances[idx], self.classes)

    def to(self, device: torch.device | str) -> Scenes:
        move = lambda t: t.to(device)  # noqa: E731
        return Scenes(
            move(self.images), move(self.labels), move(self.boxes), move(self.instances), self.classes
        )


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool (..., H, W) -> float32 (..., 4) tight xyxy boxes (x2 = last column + 1); zeros when empty."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1).to(torch.uint8), masks.any(-2).to(torch.uint8)  # (..., H), (..., W)
    y1, x1 = rows.argmax(-1), cols.argmax(-1)  # argmax returns the first maximum
    y2, x2 = h - rows.flip(-1).argmax(-1), w - cols.flip(-1).argmax(-1)
    boxes = torch.stack((x1, y1, x2, y2), -1).float()
    return boxes * rows.any(-1, keepdim=True)


def targets_from_instances(labels: torch.Tensor, instances: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dict targets after `instances` (N, S, S) changed (an augmentation moved it): items with no
    pixel left are removed, the others move to the first slots in drawing order, and each box is the
    tight box of its mask again."""
    k = labels.shape[1]
    ids = torch.arange(1, k + 1, device=instances.device, dtype=instances.dtype).view(1, k, 1, 1)
    masks = instances[:, None] == ids  # (N, K, S, S)
    kept = masks.flatten(2).any(-1) & (labels >= 0)
    order = torch.argsort((~kept).to(torch.uint8), dim=1, stable=True)  # kept first, in drawing order
    rank = torch.argsort(order, dim=1)
    lookup = torch.cat((rank.new_zeros(len(rank), 1), torch.where(kept, rank + 1, 0)), 1)  # (N, K + 1)
    instances = lookup.gather(1, instances.flatten(1).long()).view(instances.shape).to(torch.uint8)
    boxes = mask_boxes(masks).gather(1, order[..., None].expand(-1, -1, 4)) * kept.gather(1, order)[..., None]
    return {"labels": torch.where(kept, labels, -1).gather(1, order), "boxes": boxes, "instances": instances}


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., A, 4) and (..., B, 4) xyxy -> (..., A, B) IoU, in float64 so that a comparison with
    max_iou is decided the same way on every machine."""
    a, b = a.double()[..., :, None, :], b.double()[..., None, :, :]
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)


def resize_weights(out: int, src: int) -> np.ndarray:
    """(out, src) integer weights, each row summing to 2**WEIGHT_BITS: the antialiased triangle filter
    of F.interpolate(mode="bilinear", antialias=True) (support widened by the downscale factor)."""
    scale = src / out
    support = max(scale, 1.0)
    centre = (np.arange(out) + 0.5) * scale  # output pixel centres in source coordinates
    taps = np.arange(src) + 0.5
    w = np.clip(1 - np.abs(taps[None, :] - centre[:, None]) / support, 0, None)
    w /= w.sum(1, keepdims=True)
    q = np.round(w * 2**WEIGHT_BITS).astype(np.int64)
    q[np.arange(out), q.argmax(1)] += 2**WEIGHT_BITS - q.sum(1)  # rows sum exactly to one
    return q


def resize(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """uint8 (a, H, H) items through integer filter weights (a, P, H) (resize_weights, zero rows past
    an item's side) -> uint8 (a, P, P): rows, then columns, each pass rounded back to integers like
    PIL's. Every partial sum is an integer below 2**24, so float32 is exact in any summation order."""
    x = images.to(weights.dtype)
    for _ in range(2):
        x = torch.floor((weights @ x + 2 ** (WEIGHT_BITS - 1)) / 2**WEIGHT_BITS).transpose(1, 2)
    return x.to(torch.uint8)


def check_options(n: int, size, items, scale, max_iou, noise, clutter, threshold, source_side: int) -> None:
    """One ConfigError naming the first option out of range."""

    def need(ok: bool, name: str, value, expected: str) -> None:
        if not ok:
            raise ConfigError(f"fmnist-scenes option {name}={value!r}: expected {expected}")

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    pair = lambda v: isinstance(v, (tuple, list)) and len(v) == 2  # noqa: E731
    need(is_int(n) and 1 <= n <= 1_000_000, "n", n, "an int in [1, 1000000] (scenes)")
    need(is_int(size) and 16 <= size <= 512, "size", size, "an int in [16, 512] (canvas side, pixels)")
    need(
        pair(items) and all(map(is_int, items)) and 1 <= items[0] <= items[1] <= 32,
        "items",
        items,
        "(min, max) ints with 1 <= min <= max <= 32",
    )
    need(
        pair(scale) and all(isinstance(s, (int, float)) for s in scale) and 0 < scale[0] <= scale[1],
        "scale",
        scale,
        "(lo, hi) with 0 < lo <= hi",
    )
    lo, hi = round(source_side * scale[0]), round(source_side * scale[1])
    need(
        lo >= 4 and hi <= size,
        "scale",
        scale,
        f"items of 4 to size={size} pixels (source side {source_side} times scale gives {lo} to {hi})",
    )
    need(isinstance(max_iou, (int, float)) and 0 <= max_iou <= 1, "max_iou", max_iou, "a number in [0, 1]")
    need(isinstance(noise, (int, float)) and 0 <= noise <= 1, "noise", noise, "a std in [0, 1] (of 255)")
    need(is_int(clutter) and 0 <= clutter <= 64, "clutter", clutter, "an int in [0, 64] (fragments)")
    need(is_int(threshold) and 0 <= threshold <= 254, "threshold", threshold, "an int in [0, 254]")


def make_scenes(
    images: torch.Tensor,
    labels: torch.Tensor,
    n: int,
    seed: int,
    size: int = 64,
    items: tuple[int, int] = (1, 6),
    scale: tuple[float, float] = (0.5, 1.0),
    max_iou: float = 0.25,
    noise: float = 0.0,
    clutter: int = 0,
    threshold: int = 30,
    device: torch.device | str = "cpu",
    classes: list[str] | None = None,
) -> Scenes:
    """`n` scenes from the uint8 source images (M, 1, H, H) and their labels (M,): identical tensors for
    a seed on any device. An item with no pixel above `threshold` after scaling is not placed."""
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise DataError(f"scene sources: expected square grey images (M, 1, H, H), got {tuple(images.shape)}")
    side = images.shape[-1]
    items, scale = (tuple(v) if isinstance(v, (list, tuple)) else v for v in (items, scale))
    check_options(n, size, items, scale, max_iou, noise, clutter, threshold, side)
    dev = torch.device(device)
    pool_x, pool_y = images.to(dev), labels.to(dev)
    lo, hi = round(side * scale[0]), round(side * scale[1])
    frag = (min(FRAGMENT[0], side), min(FRAGMENT[1], side))
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(items[0], items[1] + 1, (n,), generator=g)
    source = torch.randint(len(pool_x), (n, items[1]), generator=g)
    sides = torch.randint(lo, hi + 1, (n, items[1]), generator=g)
    position = torch.rand((n, items[1], ATTEMPTS, 2), generator=g, dtype=torch.float64)
    frag_source = torch.randint(len(pool_x), (n, clutter), generator=g)
    frag_side = torch.randint(frag[0], frag[1] + 1, (n, clutter), generator=g)
    frag_corner = torch.rand(
        (n, clutter, 2, 2), generator=g, dtype=torch.float64
    )  # in the source, on the canvas
    # Exact either way (every partial sum is an integer below 2**24); float64 on accelerators, where a
    # float32 matmul may be allowed to run in TF32.
    weights = torch.zeros(hi + 1, hi, side, dtype=torch.float32 if dev.type == "cpu" else torch.float64)
    for length in range(lo, hi + 1):  # (L, P, side): the rows past L stay zero
        weights[length, :length] = torch.from_numpy(resize_weights(length, side))
    weights = weights.to(dev)
    parts = []
    for start in range(0, n, CHUNK):
        r = slice(start, min(start + CHUNK, n))
        background = torch.zeros(r.stop - r.start, size, size, dtype=torch.uint8, device=dev)
        if clutter:
            background = clutter_layer(
                pool_x, *(t[r].to(dev) for t in (frag_source, frag_side, frag_corner)), size
            )
        scene = compose(pool_x, pool_y, *(t[r].to(dev) for t in (count, source, sides, position)), weights,
                        background, size, max_iou, threshold)  # fmt: skip
        if noise > 0:  # drawn on the CPU after all else, chunk by chunk (CHUNK is fixed, so is the stream)
            jitter = torch.randn(scene[0].shape, generator=g).to(dev) * (noise * 255)
            scene = ((scene[0].float() + jitter).round().clamp(0, 255).to(torch.uint8), *scene[1:])
        parts.append(scene)
    images_, labels_, boxes, instances = (torch.cat(t) for t in zip(*parts))
    return Scenes(images_[:, None], labels_, boxes, instances, list(classes or FASHION_CLASSES))


def compose(pool_x, pool_y, count, source, sides, position, weights, background, size, max_iou, threshold):
    """One chunk of scenes: (images (c, S, S) uint8, labels (c, K), boxes (c, K, 4), instances (c, S, S)).
    Pixel work runs on the a active items only, as flat (a, P, P) patches."""
    c, k = source.shape
    p = weights.shape[1]  # patch side: the largest item
    dev = pool_x.device
    scene, slot = (torch.arange(k, device=dev) < count[:, None]).nonzero(as_tuple=True)  # (a,) each
    # 1. scale (exact: integer pixels times integer weights, every partial sum an integer below 2**24)
    patches = resize(pool_x[source[scene, slot], 0], weights[sides[scene, slot]])  # (a, P, P)
    opaque = patches > threshold
    own = torch.zeros(c, k, 4, dtype=torch.float64, device=dev)
    own[scene, slot] = mask_boxes(opaque).double()  # in patch coordinates
    # 2. place: the first of ATTEMPTS corners whose box keeps IoU <= max_iou with the items placed so far
    corner = (position * (size - sides + 1)[..., None, None]).floor()  # (c, K, A, 2) x0, y0
    placed = torch.zeros(c, k, dtype=torch.bool, device=dev)
    placed[scene, slot] = True  # active, until a slot finds no place
    at = torch.zeros(c, k, 2, dtype=torch.long, device=dev)
    boxes = torch.zeros(c, k, 4, dtype=torch.float64, device=dev)
    rows = torch.arange(c, device=dev)
    for j in range(k):
        candidates = own[:, j, None] + corner[:, j].repeat(1, 1, 2)  # (c, A, 4)
        ok = ((pairwise_iou(candidates, boxes[:, :j]) <= max_iou) | ~placed[:, None, :j]).all(-1)  # (c, A)
        first = ok.to(torch.uint8).argmax(1)
        placed[:, j] &= ok.any(1)
        at[:, j] = corner[rows, j, first].long()
        boxes[:, j] = candidates[rows, first]
    # canvas index of every patch pixel; a pixel that is not zero always lies inside the canvas, and the
    # zero ones (the clamp keeps them in bounds) change nothing in a maximum
    ii = torch.arange(p, device=dev)
    x0, y0 = at[scene, slot].unbind(1)
    flat = (scene * size * size + y0 * size + x0).view(-1, 1, 1) + ii.view(p, 1) * size + ii  # (a, P, P)
    flat = flat.clamp(max=background.numel() - 1).flatten()
    # 3. occlude: the topmost item with a pixel above threshold owns it; mostly hidden items are removed
    own_area = opaque.flatten(1).sum(1)
    keep = placed[scene, slot] & (own_area > 0)
    _, seen = topmost(opaque & keep[:, None, None], flat, (slot + 1).to(torch.uint8), background)
    keep &= seen.flatten(1).sum(1) >= MIN_VISIBLE * own_area  # removing items only uncovers the others
    kept = torch.zeros(c, k, dtype=torch.bool, device=dev)
    kept[scene, slot] = keep
    # compact: kept slots first, in drawing order, so labels are -1 exactly past a scene's items
    order = torch.argsort((~kept).to(torch.uint8), dim=1, stable=True)
    rank = torch.argsort(order, dim=1)  # the new slot of each old slot: it keeps the drawing order
    solid = opaque & keep[:, None, None]
    instances, seen = topmost(solid, flat, (rank[scene, slot] + 1).to(torch.uint8), background)
    values = (
        torch.zeros_like(background).flatten().scatter_reduce_(0, flat, (patches * seen).flatten(), "amax")
    )
    faint = patches * (~solid & keep[:, None, None])  # what shows of an item below its threshold
    halo = torch.zeros_like(values).scatter_reduce_(0, flat, faint.flatten(), "amax").view_as(background)
    images = torch.where(instances > 0, values.view_as(background), torch.maximum(background, halo))
    boxes = torch.zeros(c, k, 4, device=dev)
    boxes[scene, rank[scene, slot]] = (mask_boxes(seen) + at[scene, slot].repeat(1, 2)) * keep[:, None]
    labels = torch.where(kept, pool_y[source], -1).gather(1, order)
    return images, labels, boxes, instances


def topmost(solid, flat, ids, background) -> tuple[torch.Tensor, torch.Tensor]:
    """Each canvas pixel's owner: the largest id among the items opaque there (order-free, a scatter of
    maxima). -> (instances (c, S, S) uint8, seen (a, P, P): each item's visible pixels)."""
    ids = ids[:, None, None] * solid  # (a, P, P): 0 where the item is not opaque
    instances = torch.zeros_like(background).flatten().scatter_reduce_(0, flat, ids.flatten(), "amax")
    return instances.view_as(background), solid & (instances[flat].view_as(ids) == ids)


def clutter_layer(pool_x, source, side, corner, size: int) -> torch.Tensor:
    """(c, S, S) uint8 background: per scene, C square fragments of pool images (sides `side`, crop and
    canvas corners from `corner` (c, C, 2, 2) in [0, 1)), combined by their maximum."""
    c, m = source.shape
    src_side, f = pool_x.shape[-1], int(side.max())
    ii = torch.arange(f, device=pool_x.device)
    crop = (corner[..., 0, :] * (src_side - side + 1)[..., None]).floor().long()  # (c, C, 2) xy
    at = (corner[..., 1, :] * (size - side + 1)[..., None]).floor().long()
    ys, xs = ((crop[..., a, None] + ii).clamp(max=src_side - 1) for a in (1, 0))  # (c, C, f)
    pixels = (
        pool_x[source, 0].flatten(2).gather(2, (ys[..., :, None] * src_side + xs[..., None, :]).flatten(2))
    )
    inside = ii < side[..., None]  # (c, C, f)
    pixels = pixels.view(c, m, f, f) * (inside[..., :, None] & inside[..., None, :])
    q = size + f
    flat = (at[..., 1, None, None] + ii.view(f, 1)) * q + at[..., 0, None, None] + ii.view(1, f)
    canvas = torch.zeros(c, q * q, dtype=torch.uint8, device=pool_x.device)
    canvas.scatter_reduce_(1, flat.flatten(1), pixels.flatten(1), "amax")
    return canvas.view(c, q, q)[:, :size, :size]


def scenes_sha256(scenes: Scenes) -> str:
    """SHA-256 of a split: each tensor's name, dtype and shape, then its bytes (images, labels, boxes,
    instances, in that order)."""
    digest = hashlib.sha256()
    for name in ("images", "labels", "boxes", "instances"):
        tensor = getattr(scenes, name).detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def split_pool(data: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The source images of a split: train and val share no image (val takes the last twelfth of the
    training images, Fashion-MNIST's last 5,000), test takes the test images."""
    if split == "test":
        return data.test_images, data.test_labels
    start = len(data.train_images) - len(data.train_images) // 12
    part = slice(0, start) if split == "train" else slice(start, None)
    return data.train_images[part], data.train_labels[part]


def scene_settings(variant: str, split: str, options: dict) -> dict:
    """Every generator option of a split, defaults filled in; ConfigError for a bad name."""
    if variant not in VARIANT_ITEMS:
        raise ConfigError(f"unknown scene dataset {variant!r} (expected one of: {', '.join(SCENE_VARIANTS)})")
    if split not in SPLITS:
        raise ConfigError(f"{variant}: unknown split {split!r} (expected one of: {', '.join(SPLITS)})")
    unknown = sorted(set(options) - set(DEFAULTS) - {"n"})
    if unknown:
        raise ConfigError(f"{variant}: unknown option(s) {unknown} (expected: n, {', '.join(DEFAULTS)})")
    settings = {**DEFAULTS, "items": VARIANT_ITEMS[variant], "n": SPLITS[split], **options}
    if variant.endswith(":localize") and tuple(settings["items"]) != (1, 1):
        raise ConfigError(f"{variant} has exactly one item per scene, got items={settings['items']!r}")
    return {key: tuple(v) if isinstance(v, list) else v for key, v in settings.items()}


def load_scenes(
    variant: str = "fmnist-scenes",
    split: str = "train",
    seed: int = 0,
    cache_dir: Path | str | None = None,
    device: torch.device | str = "cpu",
    source: ImageDataset | None = None,
    **options,
) -> Scenes:
    """A split of `variant` ("fmnist-scenes": 1-6 items, "fmnist-scenes:localize": one), generated from
    Fashion-MNIST (or `source`) and cached in `cache_dir` (default: the dataset cache folder,
    $TRAINLAB_DATA/fmnist-scenes or ~/.cache/trainlab/fmnist-scenes). `options` override DEFAULTS and
    the split's size `n`. A cache file that does not read back to its recorded SHA-256 is regenerated."""
    settings = scene_settings(variant, split, options)
    if not isinstance(seed, int) or not 0 <= seed < 2**60:
        raise ConfigError(f"{variant}: seed={seed!r}: expected an int in [0, 2**60)")
    data = source if source is not None else load_dataset("fashion-mnist")
    images, labels = split_pool(data, split)
    identity = hashlib.sha256(images.contiguous().numpy()).hexdigest() + "-" + hashlib.sha256(
        labels.contiguous().numpy()
    ).hexdigest()  # fmt: skip
    key_text = json.dumps([VERSION, variant, split, seed, sorted(settings.items()), identity, data.classes])
    key = hashlib.sha256(key_text.encode()).hexdigest()
    folder = Path(cache_dir) if cache_dir is not None else search_roots("fmnist-scenes")[0]
    path = folder / f"{variant.replace(':', '-')}-{split}-{key[:16]}.safetensors"
    scenes = read_cache(path, key, data.classes)
    if scenes is None:
        seed_of_split = seed * len(SPLITS) + list(SPLITS).index(split)  # splits never share a stream
        scenes = make_scenes(
            images, labels, seed=seed_of_split, device=device, classes=data.classes, **settings
        )
        write_cache(path, key, scenes)
    return scenes.to(device)


def write_cache(path: Path, key: str, scenes: Scenes) -> None:
    from safetensors.torch import save

    tensors = {name: t.cpu().contiguous() for name, t in scenes.targets().items()} | {
        "images": scenes.images.cpu()
    }
    atomic_write_bytes(path, save(tensors, metadata={"key": key, "sha256": scenes_sha256(scenes)}))


def read_cache(path: Path, key: str, classes: list[str]) -> Scenes | None:
    """The cached scenes, or None when the file is missing, unreadable, for other options, or damaged
    (its tensors' SHA-256 differs from the one recorded when it was written)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            t = {name: f.get_tensor(name) for name in ("images", "labels", "boxes", "instances")}
    except (SafetensorError, OSError, ValueError, KeyError):
        return None
    scenes = Scenes(t["images"], t["labels"], t["boxes"], t["instances"], list(classes))
    if meta.get("key") != key or meta.get("sha256") != scenes_sha256(scenes):
        return None
    return scenes
