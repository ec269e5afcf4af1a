"""`trainlab ensemble RUN_DIR... --out DIR`: an ensemble of finished runs.

Each run's model file (or, for an ensemble directory, each of its members) is verified and checked
(trainlab.training.checkpoint.load_model_file), then copied byte for byte into DIR/members/, so each
member keeps its own weights and preprocessing; DIR/ensemble.json lists them. The runs must share the
dataset, the class names in their order, and the image shape: a prediction combines class scores, so
two models whose outputs mean different classes cannot be averaged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainlab.ensemble.manifest import MANIFEST, is_ensemble, read_manifest, write_manifest
from trainlab.errors import DataError, TrainlabError
from trainlab.io import atomic_write_bytes, read_json
from trainlab.training.checkpoint import ModelFile, load_model_file


def member_files(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(model file, what is known of it: seed, val_accuracy) of a run or of an ensemble's members."""
    if is_ensemble(run_dir):
        return [(m["path"], {"seed": m["seed"], "val_accuracy": m["val_accuracy"]})
                for m in read_manifest(run_dir)["members"]]  # fmt: skip
    path = run_dir / "model.safetensors"
    if not path.is_file():
        raise TrainlabError(f"{run_dir}: no model.safetensors and no {MANIFEST} (expected a finished run)")
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    return [(path, {"seed": None, "val_accuracy": summary.get("best_val_accuracy")})]


def check_compatible(first: ModelFile, other: ModelFile) -> None:
    """One line naming both files when `other` is not of `first`'s dataset, classes or image shape."""
    pairs = [
        ("dataset", first.config.data.dataset, other.config.data.dataset),
        ("classes", first.classes, other.classes),
        ("image shape", list(first.image_shape), list(other.image_shape)),
    ]
    for what, a, b in pairs:
        if a != b:
            raise DataError(
                f"{other.path}: {what} {b!r} differs from {a!r} of {first.path} "
                f"(an ensemble's members share the dataset, the classes in their order and the image shape)"
            )


def build_ensemble(
    run_dirs: list[Path | str], out: Path | str, combine: str = "mean_prob", overwrite: bool = False
) -> Path:
    """Write the ensemble of `run_dirs` into `out` (refused if it holds files, unless `overwrite`, which
    replaces only an ensemble directory's members and manifest). Returns the manifest's path."""
    out = Path(out)
    if not run_dirs:
        raise TrainlabError("trainlab ensemble: expected one or more run directories")
    entries: list[tuple[ModelFile, dict[str, Any]]] = []
    for run_dir in map(Path, run_dirs):
        for path, known in member_files(run_dir):
            stored = load_model_file(path)
            if entries:
                check_compatible(entries[0][0], stored)
            seed = known["seed"] if known["seed"] is not None else stored.config.train.seed
            entries.append((stored, {**known, "seed": seed}))
    files = [stored.path.read_bytes() for stored, _ in entries]  # before `out` is cleared: it may be a source
    prepare_out(out, overwrite)
    members = []
    for k, ((_, known), data) in enumerate(zip(entries, files)):
        relative = Path("members") / f"member-{k}.safetensors"
        atomic_write_bytes(out / relative, data)  # the verified file, unchanged
        members.append({"path": str(relative), **known})
    first = entries[0][0]
    return write_manifest(out, members, combine, first.classes, first.config.data.dataset, first.image_shape)


def prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TrainlabError(f"{out}: not a directory (expected the ensemble's output directory)")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TrainlabError(f"{out}: not empty; choose a new directory, or replace it with --overwrite")
        if not is_ensemble(out) or (out / "config.json").exists():
            raise TrainlabError(
                f"{out}: not an ensemble built by `trainlab ensemble` (a training run, or other files); "
                "not overwritten"
            )
        shutil.rmtree(out / "members", ignore_errors=True)
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
