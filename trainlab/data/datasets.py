"""The dataset registry: where each dataset lives on disk and how to read it.

Search order for a dataset's files: $TRAINLAB_DATA/<name>/, ~/.cache/trainlab/<name>/,
/usr/share/datasets/<name>/ (Debian's `dataset-fashion-mnist` package installs there).
`folder:PATH` reads an image folder with one subfolder per class.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainlab.data import digits, formats
from trainlab.data.stream import FileImages
from trainlab.errors import DataError
from trainlab.registry import Registry

DATASETS = Registry("dataset")

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageDataset:
    """A dataset: images (N, C, H, W) uint8 CPU tensors (or FileImages for a streamed image folder),
    labels (N,) int64."""

    name: str
    train_images: torch.Tensor | FileImages
    train_labels: torch.Tensor
    test_images: torch.Tensor | FileImages
    test_labels: torch.Tensor
    classes: list[str]
    root: Path | None = None
    files: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_images, FileImages)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[str, ...]  # file names the reader needs, without .gz
    classes: tuple[str, ...]
    reader: str  # "idx" or "cifar10" / "cifar100"


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    spec = dataclasses.replace(spec, classes=tuple(spec.classes))
    DATASETS.register(spec.name)(spec)
    return spec


register_dataset(DatasetSpec("fashion-mnist", tuple(IDX_FILES.values()), FASHION_CLASSES, "idx"))
register_dataset(DatasetSpec("mnist", tuple(IDX_FILES.values()), [str(i) for i in range(10)], "idx"))
register_dataset(
    DatasetSpec(
        "cifar10",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",),
        CIFAR10_CLASSES,
        "cifar10",
    )
)
register_dataset(
    DatasetSpec("cifar100", ("train.bin", "test.bin"), [f"class_{i}" for i in range(100)], "cifar100")
)
# inside the scikit-learn wheel, not in a search root: see trainlab/data/digits.py
register_dataset(DatasetSpec("digits", (), digits.CLASSES, "digits"))
# scenes of Fashion-MNIST items with boxes and masks, generated and cached by trainlab/data/scenes.py
SCENE_VARIANTS = ("fmnist-scenes", "fmnist-scenes:localize")
for _variant in SCENE_VARIANTS:
    register_dataset(DatasetSpec(_variant, (), FASHION_CLASSES, "scenes"))


def search_roots(name: str) -> list[Path]:
    """Where a dataset's files are looked for, in order."""
    roots = []
    if os.environ.get("TRAINLAB_DATA"):
        roots.append(Path(os.environ["TRAINLAB_DATA"]) / name)
    roots.append(Path.home() / ".cache" / "trainlab" / name)
    roots.append(Path("/usr/share/datasets") / name)
    return roots


def find_file(root: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` under root, also inside the subfolders the official archives unpack to;
    DataError if only something that is not a regular file has that name."""
    blocked = None
    for folder in (root, root / "cifar-10-batches-bin", root / "cifar-100-binary"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
            blocked = blocked or (candidate if candidate.exists() else None)
    if blocked:  # a directory (or FIFO) in a file's place is a mistake, not a reason to try the next root
        raise DataError(f"{blocked}: not a regular file (expected the dataset file {stem} or {stem}.gz)")
    return None


def locate(name: str) -> Path:
    """The first search root that holds every file of dataset `name`; DataError listing the places tried."""
    spec = DATASETS.get(name)
    for root in search_roots(spec.name):
        if all(find_file(root, stem) for stem in spec.files):
            return root
    tried = ", ".join(str(r) for r in search_roots(spec.name))
    raise DataError(
        f"dataset {spec.name!r} not found (looked in {tried}); run `trainlab data fetch {spec.name}`"
        + (" or `apt-get install dataset-fashion-mnist`" if spec.name == "fashion-mnist" else "")
    )


def load_dataset(name: str, memory_budget_mb: float | None = None) -> ImageDataset:
    """Load a registered dataset, or an image folder given as `folder:PATH` (streamed from disk when
    its decoded size exceeds `memory_budget_mb`)."""
    if name.startswith("folder:"):
        if not name[len("folder:") :].strip():  # Path("") is the current directory: never scan it unasked
            raise DataError(f"dataset {name!r}: expected folder:PATH, the path of an image folder")
        return load_image_folder(Path(name[len("folder:") :]), memory_budget_mb)
    if name in SCENE_VARIANTS:  # boxes and masks, not one label per image
        raise DataError(
            f"dataset {name!r} is a scene dataset: load it with trainlab.data.scenes.load_scenes "
            "(or train a localization, detection, segmentation or instance task on it)"
        )
    base, _, options = name.partition(":")
    if options:  # fashion-mnist:classes=0-4
        return class_subset(load_dataset(base, memory_budget_mb), name, parse_classes(name, options))
    spec = DATASETS.get(name)
    if spec.reader == "digits":
        return load_digits_dataset()
    root = locate(spec.name)
    paths = [find_file(root, stem) for stem in spec.files]
    return load_files(
        spec, root, tuple(paths), tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    )


def parse_classes(name: str, options: str) -> list[int]:
    """`classes=0-4` or `classes=0,2,7` (ranges inclusive, may be mixed: `classes=0-2,7`) -> sorted
    class indices; DataError naming the spec otherwise."""
    key, sep, value = options.partition("=")
    parts = value.split(",")
    pattern = r"\d{1,6}(-\d{1,6})?"
    if key.strip() != "classes" or not sep or not all(re.fullmatch(pattern, p.strip()) for p in parts):
        raise DataError(
            f"dataset {name!r}: expected NAME:classes=LIST, e.g. fashion-mnist:classes=0-4 or classes=0,2,7"
        )
    picked: set[int] = set()
    for part in parts:
        low, _, high = part.strip().partition("-")
        picked |= set(range(int(low), int(high or low) + 1))
    return sorted(picked)


def class_subset(data: ImageDataset, name: str, classes: list[int]) -> ImageDataset:
    """Only the images of `classes`, relabelled 0..k-1 in ascending order, with their class names."""
    bad = [c for c in classes if c >= data.num_classes]
    if bad or len(classes) < 2:
        raise DataError(
            f"dataset {name!r}: classes must be at least two of 0..{data.num_classes - 1}"
            + (f" ({data.name} has {data.num_classes}), got {bad}" if bad else f", got {classes}")
        )
    if data.streamed:
        raise DataError(f"dataset {name!r}: a class subset of a streamed image folder is not supported")
    relabel = torch.full((data.num_classes,), -1, dtype=torch.int64)
    relabel[classes] = torch.arange(len(classes))

    def keep(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = relabel[labels] >= 0
        return images[mask], relabel[labels[mask]]

    train_x, train_y = keep(data.train_images, data.train_labels)
    test_x, test_y = keep(data.test_images, data.test_labels)
    names = [data.classes[c] for c in classes]
    return ImageDataset(name, train_x, train_y, test_x, test_y, names, data.root, data.files)


@functools.cache
def load_digits_dataset() -> ImageDataset:
    """scikit-learn's digits at 1x28x28 (trainlab/data/digits.py: area resize, 80/20 split per class)."""
    train_x, train_y, test_x, test_y, path = digits.load_digits()
    return ImageDataset("digits", train_x, train_y, test_x, test_y, list(digits.CLASSES), path.parent)


@functools.lru_cache(maxsize=2)
def load_files(
    spec: DatasetSpec, root: Path, paths: tuple[Path, ...], mtimes: tuple[int, ...]
) -> ImageDataset:
    """Read and validate a registered dataset's files. Cached per process (keyed by the files' paths
    modification times and sizes), so experiments and tests that train many times read the files once;
    callers never modify the returned tensors in place."""
    if spec.reader == "idx":
        return load_idx_dataset(spec, root, dict(zip(IDX_FILES, paths)))
    label_bytes, label_index = (1, 0) if spec.reader == "cifar10" else (2, 1)
    train_x, train_y = formats.read_cifar_binary(paths[:-1], label_bytes, label_index, len(spec.classes))
    test_x, test_y = formats.read_cifar_binary(paths[-1:], label_bytes, label_index, len(spec.classes))
    return make_dataset(spec.name, train_x, train_y, test_x, test_y, spec.classes, root)


def load_idx_dataset(spec: DatasetSpec, root: Path, paths: dict[str, Path]) -> ImageDataset:
    arrays = {key: formats.read_idx(path) for key, path in paths.items()}
    arrays = {  # explicit element-type rules: a silent cast made [0, 1] floats 0/1 bytes
        key: (formats.idx_labels if key.endswith("labels") else formats.idx_pixels)(array, paths[key])
        for key, array in arrays.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{paths[f'{split}_images']}: expected (N, H, W) images and (N,) labels")
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}_labels']}: {len(labels)} labels for {len(images)} images in "
                f"{paths[f'{split}_images'].name}"
            )
        formats.check_labels(labels, len(spec.classes), paths[f"{split}_labels"])
    return make_dataset(
        spec.name,
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
        spec.classes,
        root,
    )


def make_dataset(name, train_x, train_y, test_x, test_y, classes, root, files=None) -> ImageDataset:
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))  # noqa: E731
    as_labels = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    return ImageDataset(
        name,
        as_images(train_x),
        as_labels(train_y),
        as_images(test_x),
        as_labels(test_y),
        list(classes),
        root,
        files or {},
    )


def load_image_folder(root: Path, memory_budget_mb: float | None = None) -> ImageDataset:
    """`root/train/<class>/*` and `root/test/<class>/*` if present, else `root/<class>/*` (test split empty).

    All images are converted to one channel count (1 if every image is grey, else 3) and resized to the
    folder's most common size, decided from every header (formats.folder_geometry, which also refuses
    any file that is not a readable image within the pixel limit); see formats.to_pixels for the mode
    conversions. When the decoded images would take more than `memory_budget_mb`, they stay on disk as
    FileImages and stream during training.
    """
    has_splits = (root / "train").is_dir()
    train_files, train_y, classes = formats.scan_image_folder(root / "train" if has_splits else root)
    test_files, test_y = [], np.zeros(0, dtype=np.int64)
    if has_splits and (root / "test").is_dir():
        test_files, test_y, test_classes = formats.scan_image_folder(root / "test", allow_empty_classes=True)
        if test_classes != classes:
            raise DataError(f"{root / 'test'}: class folders {test_classes} differ from train's {classes}")
    channels, size = formats.folder_geometry(train_files, test_files)
    decoded_mb = (len(train_files) + len(test_files)) * channels * size[0] * size[1] / 2**20
    if memory_budget_mb is not None and decoded_mb > memory_budget_mb:
        return ImageDataset(
            f"folder:{root}",
            FileImages(train_files, channels, size),
            torch.from_numpy(train_y),
            FileImages(test_files, channels, size),
            torch.from_numpy(test_y),
            classes,
            root,
            {"train": train_files, "test": test_files},
        )
    read = lambda files: np.stack([formats.load_image(p, channels, size) for p in files])  # noqa: E731
    empty = np.zeros((0, channels, *size), dtype=np.uint8)
    test_x = read(test_files) if test_files else empty
    return make_dataset(
        f"folder:{root}", read(train_files), train_y, test_x, test_y, classes, root, {"train": train_files}
    )


def split_train_val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (train indices, validation indices), both sorted."""
    if not 0 <= val_size < n:
        raise DataError(
            f"data.val_size={val_size} is out of range for {n} training images (expected 0..{n - 1}; the "
            f"default 5000 is sized for Fashion-MNIST's 60,000: set e.g. data.val_size={n // 10}, 10%)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def list_datasets() -> list[str]:
    return DATASETS.list() + ["folder:PATH"]
