"""ensemble.json: what makes a directory an ensemble (the contract of issue 14).

    {"format": "trainlab-ensemble", "version": 1, "combine": "mean_prob",
     "classes": [...], "dataset": "fashion-mnist", "image_shape": [1, 28, 28],
     "members": [{"path": "members/member-0.safetensors", "seed": 0, "val_accuracy": 0.93,
                  "weight": null}, ...]}

Each member path is relative to the directory and names an ordinary trainlab model file (the schema of
a run's model.safetensors: weights, preprocessing tensors, config, classes, image shape), so each member
keeps its own preprocessing. Independent ensembles (`ensemble.members=M`, `trainlab ensemble`) and
snapshot ensembles both write it; `trainlab eval` and `trainlab predict` read it. The file is untrusted
input: `read_manifest` checks every field and says, in one line, which one is wrong.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainlab.ensemble.combine import COMBINE_RULES
from trainlab.errors import TrainlabError
from trainlab.io import atomic_write_json, read_json

MANIFEST = "ensemble.json"
FORMAT, VERSION = "trainlab-ensemble", 1
MAX_MEMBERS = 1024  # more is a damaged file, not an ensemble anyone trained


def is_ensemble(directory: Path | str) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def write_manifest(
    directory: Path | str,
    members: list[dict[str, Any]],
    combine: str,
    classes: list[str],
    dataset: str,
    image_shape: list[int] | tuple[int, ...],
) -> Path:
    """Write directory/ensemble.json atomically. `members`: dicts with "path" (relative to `directory`)
    and optionally "seed", "val_accuracy", "weight" (missing ones are written as null). Checked with the
    same rules as read_manifest, so a manifest this writes always reads back."""
    directory = Path(directory)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "combine": combine,
        "classes": list(classes),
        "dataset": dataset,
        "image_shape": list(image_shape),
        "members": [
            {"path": str(m["path"]), **{k: m.get(k) for k in ("seed", "val_accuracy", "weight")}}
            for m in members
        ],
    }
    check_manifest(manifest, directory / MANIFEST)
    path = directory / MANIFEST
    atomic_write_json(path, manifest)
    return path


def read_manifest(directory: Path | str) -> dict[str, Any]:
    """directory/ensemble.json, checked; each member's "path" is returned resolved against `directory`
    (as a Path) and must stay inside it. One TrainlabError line naming the file and field otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise TrainlabError(f"{directory}: no {MANIFEST} (not an ensemble directory)")
    manifest = read_json(path)
    check_manifest(manifest, path)
    root = directory.resolve()
    members = []
    for i, member in enumerate(manifest["members"]):
        resolved = (directory / member["path"]).resolve()
        if not resolved.is_relative_to(root):
            raise TrainlabError(f"{path}: members[{i}].path {member['path']!r} leaves the directory")
        members.append({**member, "path": resolved})
    return {**manifest, "members": members}


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    def fail(field: str, expected: str) -> None:
        raise TrainlabError(
            f"{path}: {field} is {short(manifest_value(manifest, field))}, expected {expected}"
        )

    if manifest.get("format") != FORMAT:
        fail("format", repr(FORMAT))
    if manifest.get("version") != VERSION:
        fail("version", str(VERSION))
    if manifest.get("combine") not in COMBINE_RULES:
        fail("combine", "one of " + ", ".join(COMBINE_RULES))
    classes = manifest.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        fail("classes", "a list of class names")
    if not isinstance(manifest.get("dataset"), str) or not manifest["dataset"]:
        fail("dataset", "a dataset name")
    shape = manifest.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and v > 0 for v in shape)):
        fail("image_shape", "[C, H, W] of positive integers")
    members = manifest.get("members")
    if not (isinstance(members, list) and 1 <= len(members) <= MAX_MEMBERS):
        fail("members", f"a list of 1 to {MAX_MEMBERS} members")
    for i, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("path"), str) or not member["path"]:
            raise TrainlabError(f"{path}: members[{i}] is {short(member)}, expected an object with a 'path'")
        if member.get("seed") is not None and type(member["seed"]) is not int:
            raise TrainlabError(
                f"{path}: members[{i}].seed is {short(member['seed'])}, expected an int or null"
            )
        for key in ("val_accuracy", "weight"):
            value = member.get(key)
            if value is not None and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                raise TrainlabError(
                    f"{path}: members[{i}].{key} is {short(value)}, expected a number >= 0 or null"
                )
    if manifest["combine"] == "weighted" and any(
        m.get("weight") is None and m.get("val_accuracy") is None for m in members
    ):
        raise TrainlabError(
            f"{path}: combine 'weighted' needs each member's weight or val_accuracy (a member has neither)"
        )


def manifest_value(manifest: dict[str, Any], field: str) -> Any:
    return manifest.get(field, "missing")


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
