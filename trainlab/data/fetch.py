"""`trainlab data fetch NAME`: download a dataset from its official source, verify it, write atomically.

Checksums are pinned. For Fashion-MNIST they are SHA-256 of the *decompressed* files, because
redistributors (Debian, mirrors) re-compress the same content; for the others they are the checksums
of the official archives as published. Nothing else in trainlab ever downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from trainlab.data.datasets import DATASETS, search_roots
from trainlab.errors import DataError
from trainlab.io import atomic_write_bytes
from trainlab.progress import progress_bar


@dataclass(frozen=True)
class Download:
    url: str
    checksum: str  # "sha256:<hex>", "sha256-content:<hex>" (of the gunzipped bytes) or "md5:<hex>"


FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
SOURCES: dict[str, list[Download]] = {
    "fashion-mnist": [
        Download(
            FASHION + "train-images-idx3-ubyte.gz",
            "sha256-content:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        Download(
            FASHION + "train-labels-idx1-ubyte.gz",
            "sha256-content:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        Download(
            FASHION + "t10k-images-idx3-ubyte.gz",
            "sha256-content:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        Download(
            FASHION + "t10k-labels-idx1-ubyte.gz",
            "sha256-content:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ],
    "mnist": [
        Download(
            MNIST + "train-images-idx3-ubyte.gz",
            "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        Download(
            MNIST + "train-labels-idx1-ubyte.gz",
            "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        Download(MNIST + "t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
        Download(MNIST + "t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "cifar10": [
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "md5:c32a1d4ab5d03f1284b67883e8d87530"
        )
    ],
    "cifar100": [
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "md5:03b5dce01913d631647c71ecec9e9cb8"
        )
    ],
}


def verify(data: bytes, checksum: str, what: str) -> None:
    algo, _, expected = checksum.partition(":")
    if algo == "sha256-content":
        data, algo = gzip.decompress(data), "sha256"
    actual = hashlib.new(algo, data).hexdigest()
    if actual != expected:
        raise DataError(f"{what}: {algo} is {actual}, expected {expected} (corrupt or altered download)")


def download(url: str, timeout: float, progress: bool) -> bytes:
    """The bytes at `url`, read a MiB at a time so that a progress bar can follow."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        size = response.headers.get("Content-Length")
        chunks = []
        with progress_bar(int(size) if size else None, Path(url).name, progress, as_bytes=True) as advance:
            while chunk := response.read(1 << 20):
                chunks.append(chunk)
                advance(len(chunk))
    return b"".join(chunks)


def fetch_dataset(name: str, dest: Path | None = None, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download, verify and unpack dataset `name` into `dest` (default: the first search root), with a
    progress bar per file on a terminal's stderr unless `progress` is False."""
    spec = DATASETS.get(name)
    if spec.name not in SOURCES:  # digits ships inside scikit-learn
        raise DataError(f"dataset {spec.name!r} is not downloaded: pip install 'trainlab[digits]'")
    dest = Path(dest) if dest else search_roots(spec.name)[0]
    for item in SOURCES[spec.name]:
        try:
            data = download(item.url, timeout, progress)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DataError(
                f"cannot download {item.url} ({reason}); alternatives: copy the files into "
                f"{' or '.join(str(r) for r in search_roots(spec.name))}"
                + (", or `apt-get install dataset-fashion-mnist`" if spec.name == "fashion-mnist" else "")
            ) from None
        verify(data, item.checksum, item.url)
        if item.url.endswith(".tar.gz"):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                for member in archive.getmembers():
                    if member.isfile() and member.name.endswith(".bin"):
                        atomic_write_bytes(dest / Path(member.name).name, archive.extractfile(member).read())
        else:
            atomic_write_bytes(dest / Path(item.url).name, data)
    return dest
