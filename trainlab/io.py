"""Atomic file writes, used by data, checkpoints, reports and experiments alike: write a temporary file
beside the target, fsync it, then rename it over the target, so that a reader (or a resumed run) sees
either the old file or the new one, never half of one.

The temporary file is `.<target name>.<random>.tmp`, created as a plain `open` creates a file (mode
0o666 less the umask), so the renamed file has the permissions any other output would. A process killed
mid-write (SIGKILL: no cleanup runs) leaves that file behind; `remove_stale_temporaries` deletes them
in a folder that no one is writing to."""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import secrets
from pathlib import Path
from typing import Any

from trainlab.errors import TrainlabError

# How atomic_write_bytes names its temporary files (tempfile.mkstemp's 8 characters, before).
TEMPORARY_NAME = re.compile(r"\..+\.\w{8,}\.tmp")


def create_temporary(path: Path) -> tuple[int, Path]:
    """(descriptor, path) of a new, empty temporary file beside `path`. Not tempfile.mkstemp: it
    creates mode 0o600 whatever the umask, and the rename would carry that mode to the target."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_stale_temporaries(folder: Path | str) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in `folder` (not its subfolders)
    and return them. Only for a folder no process is writing to, such as a run directory under its lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in sorted(folder.iterdir()) if TEMPORARY_NAME.fullmatch(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) in nested dicts, lists and tuples made None;
    NumPy scalars become Python numbers."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON: a non-finite float is written as null. json.dumps would write NaN or Infinity,
    which no JSON parser but Python's accepts (RFC 8259 has no such numbers)."""
    return json.dumps(finite_or_null(value), indent=indent, allow_nan=False)


def atomic_write_json(path: Path | str, value: Any) -> None:
    """Every JSON file a run writes goes through here, so none holds NaN."""
    atomic_write_text(path, json_text(value))


def read_json(path: Path) -> dict:
    """A JSON object from `path` (config.json, summary.json); one TrainlabError line naming the file
    when it is unreadable, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainlabError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise TrainlabError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
