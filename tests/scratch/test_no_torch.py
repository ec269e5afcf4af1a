"""The NumPy engine never imports torch: importing trainlab.scratch (and every module in it) in a fresh
interpreter leaves torch out of sys.modules, and so does building and training a model."""

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import trainlab.scratch
for info in pkgutil.walk_packages(trainlab.scratch.__path__, "trainlab.scratch."):
    importlib.import_module(info.name)
import numpy as np
from trainlab.scratch import MLP, SGD, fit, gradient_check
X, y = np.random.default_rng(0).standard_normal((8, 4)), np.arange(8) % 3
model = MLP([4, 5, 3], act="gelu")
fit(model, SGD(model.params, 0.1), X.astype(np.float32), y, epochs=1, batch_size=4)
gradient_check(model, X, y, samples=2)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_importing_and_using_scratch_does_not_import_torch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_check_would_see_torch():
    """The same probe reports torch once something imports it, so the test above can fail."""
    probe = "import sys, trainlab.nn.activations; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True"
