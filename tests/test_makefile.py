"""`make install` must never let pip choose a torch: unpinned, it takes the newest, a multi-GB CUDA build.

Each test runs the real Makefile and `python3 -m venv` into tmp_path, with a fake `pip` first on
PYTHONPATH that records its arguments (and the constraints they name) and "installs" a pinned torch as
a tiny stub. Covered: a bare shell, an activated virtualenv that has a torch (which the new .venv does not
see), and a torch that the base interpreter has (a CUDA user's), which must be kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(sys._base_executable).resolve()  # the interpreter under any virtualenv
PINNED = "torch==2.13.0"  # the Makefile's TORCH

FAKE_PIP = """
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
constraints = [Path(args[i + 1]).read_text().split() for i, a in enumerate(args) if a == "-c"]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "constraints": sum(constraints, [])}) + "\\n")
for arg in args:
    if arg.startswith("torch=="):  # what the real pip would do with the pin: install its CPU build
        torch = Path(__file__).parents[1] / "torch"
        torch.mkdir()
        (torch / "__init__.py").write_text(f"__version__ = {arg[7:] + '+cpu'!r}\\n")
"""

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.skipif(
        subprocess.run([BASE_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0,
        reason="the base interpreter has a torch, so every .venv would keep it",
    ),
]


def write_torch(site: Path, version: str) -> None:
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")


def make_install(tmp_path: Path, path: list[Path], env: dict[str, str] | None = None) -> list[dict]:
    """Run `make install` into tmp_path/venv with PATH = `path` + /usr/bin:/bin; return pip's calls."""
    fakes = tmp_path / "fakes"
    (fakes / "pip").mkdir(parents=True)
    (fakes / "pip" / "__init__.py").write_text("")
    (fakes / "pip" / "__main__.py").write_text(FAKE_PIP)
    drop = {"VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    run_env = {k: v for k, v in os.environ.items() if k not in drop}
    log = tmp_path / "pip.log"
    run_env |= {
        "PATH": os.pathsep.join([*map(str, path), "/usr/bin", "/bin"]),
        "PYTHONPATH": str(fakes),
        "FAKE_PIP_LOG": str(log),
        **(env or {}),
    }
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-C", ROOT, "install", f"VENV={venv}"], env=run_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (venv / ".installed").exists()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    if any(a.startswith("torch==") for call in calls for a in call["args"]):  # the pin was installed:
        assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()  # isolated
    for call in calls:  # every install names a torch pin, or is constrained to one
        pins = [a for a in call["args"] + call["constraints"] if a.startswith("torch==")]
        assert call["args"][0] == "install" and pins, call
    return calls


@pytest.fixture
def bare_bin(tmp_path) -> Path:
    """A bin folder whose `python3` is the base interpreter, as in a shell with no virtualenv."""
    bin_dir = tmp_path / "bare-bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(BASE_PYTHON)
    return bin_dir


def test_bare_shell_installs_the_pinned_torch_and_constrains_the_project_to_it(tmp_path, bare_bin):
    torch_install, project_install = make_install(tmp_path, [bare_bin])
    assert torch_install["args"][-1] == PINNED
    assert "-e" in project_install["args"] and ".[dev]" in project_install["args"]
    assert project_install["constraints"] == [PINNED + "+cpu"]


def test_activated_virtualenv_torch_is_not_trusted(tmp_path, bare_bin):
    # Its torch is importable from `python3`, yet --system-site-packages gives .venv the base's packages.
    outer = tmp_path / "outer"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", outer], check=True)
    outer_python = outer / "bin" / "python3"
    site = subprocess.run(
        [outer_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    write_torch(Path(site), "9.9.9")
    version = [outer_python, "-c", "import torch; print(torch.__version__)"]
    assert subprocess.run(version, capture_output=True, text=True).stdout.strip() == "9.9.9"

    calls = make_install(tmp_path, [outer / "bin", bare_bin], {"VIRTUAL_ENV": str(outer)})
    torch_install, project_install = calls
    assert torch_install["args"][-1] == PINNED
    assert project_install["constraints"] == [PINNED + "+cpu"]
    assert "9.9.9" not in json.dumps(calls)


def test_torch_the_new_venv_sees_is_kept_and_pinned(tmp_path, bare_bin):
    # Stands in for a CUDA build in the system Python, which .venv inherits.
    system_site = tmp_path / "system-site"
    write_torch(system_site, "2.5.1+cu124")
    fakes = tmp_path / "fakes"
    calls = make_install(tmp_path, [bare_bin], {"PYTHONPATH": f"{fakes}{os.pathsep}{system_site}"})
    assert len(calls) == 1, calls  # no torch install
    assert calls[0]["constraints"] == ["torch==2.5.1+cu124"]
