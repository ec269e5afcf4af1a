"""Every lecture claim as a reproducible, measured experiment: one module per claim.

    from trainlab.experiments import EXPERIMENTS, run_experiment
    result = run_experiment("init", quick=True, out="experiments/init")   # {"verdict", "out", ...}

`trainlab experiment NAME [--quick] [--out DIR] [--device D] [--seeds N] [--quiet]` calls run_experiment.
"""

from trainlab.experiments import (  # noqa: F401  (each module registers its experiment)
    activations,
    approximation,
    augmentation,
    backprop,
    batchnorm,
    dead_relu,
    dropout_inference,
    ensembles,
    init,
    preprocessing,
    regularization,
    transfer,
    zero_centering,
)
from trainlab.experiments.common import EXPERIMENTS, run_experiment

__all__ = ["EXPERIMENTS", "run_experiment"]
