"""One inference path: the final evaluation of a run, `trainlab eval` and `trainlab predict` use the same
weights (EMA when on), preprocessing, precision and test-time augmentation, so `trainlab eval RUN --json`
reproduces summary.json's test metrics exactly, for every shipped recipe."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import trainlab
from trainlab.cli import main
from trainlab.config import recipe_names
from trainlab.training.checkpoint import load_checkpoint, unprefixed

SMALL = {
    "data.dataset": "mnist", "data.limit_train": 256, "data.val_size": 44, "data.batch_size": 64,
    "train.epochs": 1, "train.device": "cpu", "train.compile": False,
}  # fmt: skip
SMALL_MODEL = {"speednet": {"model.widths": [8, 8, 8]}, "cnn": {"model.widths": [8, 8, 16]}}
# The scenes recipes' runs (vision_run) are evaluated again in tests/test_vision_run.py.
CASES = [(name, {}) for name in recipe_names() if not name.startswith("scenes-")] + [
    ("speedrun", {"train.precision": "bf16", "train.channels_last": True}),  # the recipe's CUDA settings
    ("default", {"train.ema": 0.9, "train.tta": True, "train.early_stopping": 1}),
]


def small_config(recipe: str, extra: dict):
    model = trainlab.load_config(recipe).model.name
    return trainlab.load_config(recipe, {**SMALL, **SMALL_MODEL.get(model, {}), **extra})


def cli_json(capsys, *args) -> dict | list:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("recipe", "extra"), CASES, ids=[f"{r}{'+' if e else ''}" for r, e in CASES])
def test_eval_reproduces_the_runs_final_evaluation_exactly(recipe, extra, tiny_mnist, tmp_path, capsys):
    cfg = small_config(recipe, extra)
    trainlab.train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    evaluated = cli_json(capsys, "eval", str(tmp_path / "run"), "--json", "--device", "cpu")
    assert evaluated["test_accuracy"] == summary["test_accuracy"]
    assert evaluated["test_loss"] == summary["test_loss"]
    assert evaluated["confusion_matrix"] == summary["confusion_matrix"]


def test_predict_uses_the_ema_weights_and_tta_of_the_run(tiny_mnist, tmp_path, capsys):
    cfg = small_config("default", {"train.ema": 0.9, "train.tta": True})
    result = trainlab.train(cfg, tmp_path / "run", progress=False)
    data = trainlab.load_dataset("mnist")
    images = data.test_images[:4]
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image[0].numpy()).save(files[-1])
    predicted = cli_json(
        capsys, "predict", str(tmp_path / "run"), *files, "--top-k", "10", "--json", "--device", "cpu"
    )

    # The run's evaluated model by hand: the EMA weights, the fitted preprocessing, mean over the mirror.
    trained = trainlab.load_trained(tmp_path / "run", device="cpu")
    ema, standardize = result.model.eval(), trained.predictor.transform
    raw = trainlab.create_model("cnn", widths=[8, 8, 16]).eval()  # the weights before averaging
    tensors, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    raw.load_state_dict(unprefixed("model", tensors))
    with torch.no_grad():
        x = standardize(images)
        expected = torch.softmax(0.5 * (ema(x) + ema(x.flip(-1))), dim=1)
        without_tta = torch.softmax(ema(x), dim=1)
        without_ema = torch.softmax(0.5 * (raw(x) + raw(x.flip(-1))), dim=1)
    got = torch.zeros(len(files), 10)
    for row, item in enumerate(predicted):
        for p in item["predictions"]:
            got[row, p["index"]] = p["probability"]
    # Probabilities are <= 1, so a few float32 roundings of the same arithmetic stay within 8 eps; the
    # paths that skip TTA or EMA must fall outside that band, or the check would not tell them apart.
    band = 8 * torch.finfo(torch.float32).eps
    assert torch.allclose(got, expected, rtol=0, atol=band)
    assert not torch.allclose(without_tta, expected, rtol=0, atol=band)
    assert not torch.allclose(without_ema, expected, rtol=0, atol=band)
