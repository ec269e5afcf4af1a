"""One tiny run, shared by the report tests: LeNet-5 for 2 epochs on a generated 300-image 'mnist', with
augmentation and diagnostics on, so that every section of report.html is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_idx


@pytest.fixture(scope="package")
def tiny_run(tmp_path_factory):
    import trainlab
    from trainlab.run import train

    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    (root / "data" / "mnist").mkdir(parents=True)
    for split, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 250  # the class is written in the pixels
        write_idx(root / "data" / "mnist" / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / "data" / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels)
    overrides = {
        "data.dataset": "mnist",
        "model.name": "lenet5",
        "train.epochs": 2,
        "data.batch_size": 32,
        "data.val_size": 60,
    }
    overrides |= {"data.augment": "hflip", "train.diagnose": True}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINLAB_DATA", str(root / "data"))
        train(trainlab.load_config("default", overrides), root / "run", progress=False)
    return root / "run"
