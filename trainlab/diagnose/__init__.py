"""Training diagnostics as callbacks: activation statistics and histograms, gradient flow, update sizes.

`trainlab train --diagnose` adds `diagnostic_callbacks(run_dir)`; figures go to run_dir/diagnostics/.
"""

from __future__ import annotations

from pathlib import Path

from trainlab.diagnose.activations import ActivationStats, activation_layers
from trainlab.diagnose.gradients import GradientStats
from trainlab.training.callbacks import Callback

__all__ = ["ActivationStats", "GradientStats", "activation_layers", "diagnostic_callbacks"]


def diagnostic_callbacks(run_dir: Path | None, every: int = 10, capacity: int = 64) -> list[Callback]:
    out = Path(run_dir) / "diagnostics" if run_dir is not None else None
    return [ActivationStats(every=every, capacity=capacity, out=out), GradientStats(every, capacity, out=out)]
