"""Every lecture claim as a reproducible, measured experiment: one module per claim.

    from trainlab.experiments import EXPERIMENTS, run_experiment
    result = run_experiment("init", quick=True, out="experiments/init")   # {"verdict", "out", ...}

`trainlab experiment NAME [--quick] [--out DIR] [--device D] [--seeds N]` calls run_experiment.
"""

from trainlab.experiments import approximation, init, zero_centering  # noqa: F401  (they register)
from trainlab.experiments.common import EXPERIMENTS, run_experiment

__all__ = ["EXPERIMENTS", "run_experiment"]
