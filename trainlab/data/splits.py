"""The loaders of a run: a seeded train/validation split of the training set, and the test set,
untouched until the final evaluation. In-memory datasets move to the device once; streamed image
folders are read by worker processes. `trainlab eval` rebuilds the test loader with `test_loader`, so
it sees the batches the run's final evaluation saw.

Everything about the splits that can go wrong is checked here, before the first step, not found by the
final evaluation: an empty training split, a test split whose image shape differs from the training
split's; a folder's files that are not images were refused when it was loaded (formats.folder_geometry
reads every header). A folder without a test split trains with a warning and reports no test metrics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import torch

from trainlab.config import Config
from trainlab.data.datasets import ImageDataset, split_train_val
from trainlab.data.loader import DeviceLoader
from trainlab.data.shard import rank_world, shard_evaluation
from trainlab.data.stream import StreamLoader
from trainlab.errors import ConfigError, DataError

STREAM_FIT_SAMPLE = 4096  # images the preprocessing of a streamed dataset is fitted on


@dataclass
class Loaders:
    train: DeviceLoader | StreamLoader
    val: DeviceLoader | StreamLoader
    test: DeviceLoader | StreamLoader | None  # None: the dataset has no test split
    fit_images: torch.Tensor  # uint8 training images on the device, to fit the preprocessing on
    fit_targets: torch.Tensor  # their targets (for the compile warm-up)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def check_splits(data: ImageDataset) -> None:
    """What can be checked of a dataset before the first step (the test split's files: `test_loader`)."""
    where = f"{data.name} ({data.root})" if data.root and str(data.root) not in data.name else data.name
    if not len(data.train_labels):
        raise DataError(f"{where}: the training split is empty (expected at least one image)")
    train_shape, test_shape = tuple(data.train_images.shape[1:]), tuple(data.test_images.shape[1:])
    if len(data.test_labels) and test_shape != train_shape:
        raise DataError(
            f"{where}: the test images are {shape_text(test_shape)} but the training images are "
            f"{shape_text(train_shape)} (expected one CxHxW for every split)"
        )


def test_loader(data: ImageDataset, cfg: Config, device: torch.device) -> DeviceLoader | StreamLoader:
    if not len(data.test_labels):
        raise DataError(
            f"{data.name} has no test split (an image folder's is ROOT/test/<class>/): nothing to evaluate"
        )
    batch, count = cfg.data.eval_batch_size, len(data.test_labels)
    count = count if cfg.data.limit_test is None else min(count, cfg.data.limit_test)  # the first N
    if data.streamed:
        indices = torch.arange(count)
        return StreamLoader(data.test_images, data.test_labels, indices, batch, workers=cfg.data.workers,
                            device=device)  # fmt: skip
    return DeviceLoader(data.test_images[:count].to(device), data.test_labels[:count].to(device), batch)


def per_class_subset(indices: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """`per_class` of `indices` from each class (stratified), drawn by a permutation seeded with `seed`,
    sorted. DataError when a class has fewer images than that."""
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    picked = []
    for c in labels.unique().tolist():
        of_class = order[labels[order] == c]  # this class's positions, in the seeded order
        if len(of_class) < per_class:
            raise DataError(
                f"data.per_class={per_class}: class {c} has only {len(of_class)} training images "
                f"(expected at least {per_class})"
            )
        picked.append(of_class[:per_class])
    return indices[torch.cat(picked)].sort().values


def make_loaders(data: ImageDataset, cfg: Config, device: torch.device) -> Loaders:
    """The run's loaders; in a distributed run (trainlab.data.shard), every rank's training loader yields
    the same global batches (the trainer keeps its rows), a streamed one decoding only this rank's rows,
    and the validation and test loaders yield this rank's block of batches."""
    loaders = make_split_loaders(data, cfg, device)
    rank, world = rank_world()
    if world > 1:
        for loader in (loaders.val, loaders.test):
            if loader is not None:
                shard_evaluation(loader)
        if isinstance(loaders.train, StreamLoader):
            loaders.train.rows = (rank, world)
    return loaders


def make_split_loaders(data: ImageDataset, cfg: Config, device: torch.device) -> Loaders:
    check_splits(data)
    test = test_loader(data, cfg, device) if len(data.test_labels) else None
    if test is None:
        warnings.warn(
            f"{data.name} has no test split (an image folder's is ROOT/test/<class>/): "
            "the run reports no test metrics",
            stacklevel=2,
        )
    train_idx, val_idx = split_train_val(len(data.train_images), cfg.data.val_size, cfg.train.seed)
    if cfg.data.limit_train is not None:
        if cfg.data.limit_train <= 0:
            raise ConfigError(f"data.limit_train must be positive, got {cfg.data.limit_train}")
        train_idx = train_idx[: cfg.data.limit_train]
    if cfg.data.per_class is not None:
        labels = data.train_labels[train_idx]
        train_idx = per_class_subset(train_idx, labels, cfg.data.per_class, cfg.train.seed)
    batch, eval_batch, seed = cfg.data.batch_size, cfg.data.eval_batch_size, cfg.train.seed
    if data.streamed:
        stream = partial(StreamLoader, workers=cfg.data.workers, device=device)
        shuffled = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed))]
        return Loaders(
            stream(
                data.train_images,
                data.train_labels,
                train_idx,
                batch,
                shuffle=True,
                drop_last=True,
                seed=seed,
            ),  # fmt: skip
            stream(data.train_images, data.train_labels, val_idx, eval_batch),
            test,
            data.train_images[shuffled[:STREAM_FIT_SAMPLE]].to(device),
            data.train_labels[shuffled[:STREAM_FIT_SAMPLE]].to(device),
        )
    train_x, train_y = data.train_images[train_idx].to(device), data.train_labels[train_idx].to(device)
    return Loaders(
        DeviceLoader(train_x, train_y, batch, shuffle=True, drop_last=True, seed=seed),
        DeviceLoader(
            data.train_images[val_idx].to(device), data.train_labels[val_idx].to(device), eval_batch
        ),
        test,
        train_x,
        train_y,
    )
