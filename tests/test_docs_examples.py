"""Every ```python block in README.md and docs/*.md runs as written.

Each page runs in a fresh interpreter with the current directory set to a temporary one, its blocks in
order and sharing one namespace, as a reader who pastes them one after another would. The examples
keep their own sizes small (a few thousand images, an epoch or two), so nothing is rewritten here.
Pages are found when the tests are collected: a new page is tested without being listed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

# Runs the blocks given as JSON [[page, lines_before, code], ...]. Each block is compiled with the page as
# its file name and the page's line numbers, so a traceback points into the markdown.
RUNNER = """
import json, sys, traceback
import torch
torch.set_num_threads(1)
namespace = {"__name__": "__main__"}
for index, (page, lines_before, code) in enumerate(json.loads(sys.argv[1])):
    try:
        exec(compile("\\n" * lines_before + code, page, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"@@ failed block {index}", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """[(number of lines before the block's code, code), ...] in the order of the page."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in FENCE.finditer(text)]


def pages_with_examples() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [page for page in pages if python_blocks(page)]


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    name = str(page.relative_to(ROOT))
    blocks = python_blocks(page)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    payload = json.dumps([[name, line, code] for line, code in blocks])
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, payload],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: the examples ran longer than 300 s", pytrace=False)
    if done.returncode == 0:
        return
    failed = re.search(r"^@@ failed block (\d+)$", done.stderr, re.MULTILINE)
    line, code = blocks[int(failed.group(1))] if failed else (0, "")
    where = f"the block at line {line + 1}, first line {code.splitlines()[0]!r}" if failed else "startup"
    tail = "\n".join(row for row in done.stderr.splitlines()[-26:] if not row.startswith("@@ "))
    pytest.fail(f"{name}: {where} failed (exit {done.returncode}):\n{tail}", pytrace=False)
