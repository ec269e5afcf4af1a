"""Where and how a run was made: device, versions, trainlab's git commit and the command line, so that a
report says what would be needed to make the run again."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import trainlab

UNKNOWN = "unknown"


def git_commit(start: Path | None = None) -> str:
    """The commit checked out in the repository that holds trainlab, read from .git itself (HEAD, then
    the branch's loose ref or packed-refs), so git need not be installed; `git rev-parse HEAD` when the
    files do not say (an unusual layout); "unknown" outside a repository (an installed wheel)."""
    source = Path(start or Path(trainlab.__file__).resolve().parent)
    for folder in (source, *source.parents):
        if (folder / ".git").exists():
            return read_head(folder / ".git") or rev_parse(folder)
    return UNKNOWN


def read_head(git: Path) -> str | None:
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (git.parent / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head  # a detached HEAD holds the commit itself
        ref = head[5:]
        common = git / "commondir"  # a worktree keeps its branches in the main repository
        root = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for folder in (git, root):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
            packed = folder / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(f" {ref}"):
                        return line.split()[0]
    except (OSError, IndexError):
        return None
    return None


def rev_parse(folder: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else UNKNOWN


def command_line(argv: list[str] | None = None) -> str:
    """The process's command line, quoted so that it can be pasted back into a shell."""
    return shlex.join(sys.argv if argv is None else argv)


def environment(summary: dict) -> list[tuple[str, str]]:
    """(name, value) rows: the device and torch version the run recorded, then this process's."""
    return [
        ("device", str(summary.get("device", UNKNOWN))),
        ("torch", str(summary.get("torch_version", torch.__version__))),
        ("trainlab commit", git_commit()),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("command line", command_line()),
    ]
