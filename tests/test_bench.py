"""The benchmarks' quick modes run the same code paths as the full ones: every pipeline must learn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_speed_quick_pipelines_learn(tmp_path):
    figure = tmp_path / "speed.png"
    script = ROOT / "bench" / "train_speed.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--workers", "0", "--plot", str(figure)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("trainlab", "PyTorch"))]
    assert len(rows) == 3 and all(float(row.split()[-3]) > 0.3 for row in rows)
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_ddp_scaling_quick_run_reports_a_ratio(tiny_mnist):
    script = ROOT / "bench" / "ddp_scaling.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--dataset", "mnist", "--images", "256", "--procs", "1,2"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    throughput = {row[0]: float(row[1]) for row in rows if row[:1] in (["1"], ["2"])}
    assert set(throughput) == {"1", "2"} and min(throughput.values()) > 0
    assert float(proc.stdout.split("scaling 2 vs 1 process: ")[1].split("x")[0]) > 0
