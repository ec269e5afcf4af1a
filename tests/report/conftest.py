"""One tiny run, shared by the report tests: LeNet-5 for 2 epochs on a generated 300-image 'mnist', with
augmentation and diagnostics on, so that every section of report.html is drawn."""

from __future__ import annotations

import pytest

from tests.conftest import write_tiny_mnist


@pytest.fixture(scope="package")
def tiny_run(tmp_path_factory):
    import trainlab
    from trainlab.run import train

    root = tmp_path_factory.mktemp("report")
    write_tiny_mnist(root / "data" / "mnist")
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
