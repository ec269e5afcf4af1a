"""pca and pca_whiten train a model that takes vectors (mlp) end to end: the model is built for the k
fitted components, the projection goes into model.safetensors, `trainlab predict` and `trainlab eval`
apply it to new images, and every image model is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import trainlab
from tests.tolerance import assert_float32_close
from trainlab.cli import main
from trainlab.data.preprocess import MODES, Standardizer
from trainlab.data.splits import make_loaders
from trainlab.errors import ConfigError
from trainlab.models import MODELS, model_from_config
from trainlab.models.factory import vector_models
from trainlab.training.checkpoint import load_checkpoint, unprefixed

TINY = {
    "data.dataset": "mnist", "data.val_size": 50, "data.batch_size": 50, "train.epochs": 3,
    "train.device": "cpu", "train.compile": False, "model.name": "mlp",
}  # fmt: skip
IMAGE_MODELS = [name for name in MODELS.list() if name not in vector_models()]


def cli_json(capsys, *args) -> dict | list:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("mode", "options"), [("pca", {"k": 20}), ("pca_whiten", {"variance": 0.9})], ids=["pca", "pca_whiten"]
)
def test_vector_modes_train_an_mlp_and_predict_and_eval_apply_the_stored_projection(
    mode, options, tiny_mnist, tmp_path, capsys
):
    # hflip keeps tiny_mnist's class (a bright row block over columns 4..23) and runs before the projection
    overrides = {**TINY, "data.preprocess": mode, "data.augment": "hflip"}
    overrides |= {f"data.preprocess_options.{key}": value for key, value in options.items()}
    cfg = trainlab.load_config("default", overrides)
    result = trainlab.train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.5  # chance is 0.1: the k components carry the class

    # The checkpoint holds the projection fitted on the training split, and the model is built for its k.
    tensors, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    data = trainlab.load_dataset("mnist")
    refit = Standardizer(mode, **options).fit(make_loaders(data, cfg, torch.device("cpu")).fit_images)
    stored = unprefixed("preprocess", tensors)
    assert stored.keys() == refit.stats.keys() >= {"mean", "components"}
    assert all(torch.equal(stored[key], refit.stats[key]) for key in stored)
    k = stored["components"].shape[1]
    assert (k == 20) if mode == "pca" else (1 < k < 784)
    assert result.model.net[1].in_features == k

    evaluated = cli_json(capsys, "eval", str(tmp_path / "run"), "--json", "--device", "cpu")
    assert evaluated["test_accuracy"] == summary["test_accuracy"]
    assert evaluated["test_loss"] == summary["test_loss"]

    images = data.test_images[:4]
    files = [str(tmp_path / f"{i}.png") for i in range(len(images))]
    for image, file in zip(images, files):
        Image.fromarray(image[0].numpy()).save(file)
    predicted = cli_json(
        capsys, "predict", str(tmp_path / "run"), *files, "--top-k", "10", "--json", "--device", "cpu"
    )
    got = torch.zeros(len(files), 10)
    for row, item in enumerate(predicted):
        for p in item["predictions"]:
            got[row, p["index"]] = p["probability"]
    # The projection by hand, from the stored tensors: (x - mu) U_k, divided by sqrt(lambda_k + eps)
    features = (images.float() / 255 - stored["mean"]).flatten(1) @ stored["components"]  # (4, k)
    features = features / stored["scale"] if "scale" in stored else features
    with torch.no_grad():
        expected = torch.softmax(result.model.eval()(features), dim=1)
    # the same float32 arithmetic in the same order; probabilities <= 1, so 8 roundings of 1 bound it
    assert_float32_close(got, expected, ops=8, scale=1.0)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_image_models_are_refused_vector_modes_with_one_line(model, tiny_mnist, monkeypatch):
    cfg = trainlab.load_config("default", {**TINY, "model.name": model, "data.preprocess": "pca_whiten"})
    monkeypatch.setattr(Standardizer, "fit", lambda self, x: pytest.fail("refused only after the fit"))
    with pytest.raises(ConfigError) as refused:
        trainlab.train(cfg, progress=False)
    message = str(refused.value)
    assert "data.preprocess='pca_whiten' returns (N, k) feature vectors" in message
    assert f"model {model!r} takes images" in message and "\n" not in message
    assert f"models that take vectors: {', '.join(vector_models())})" in message and "mlp" in vector_models()


def test_vector_modes_refuse_tta_and_a_configured_input_size(tiny_mnist):
    tta = trainlab.load_config("default", {**TINY, "data.preprocess": "pca", "train.tta": True})
    with pytest.raises(
        ConfigError, match=r"train\.tta mirrors the model's input, but data\.preprocess='pca'"
    ):
        trainlab.train(tta, progress=False)
    sized = trainlab.load_config("default", {**TINY, "data.preprocess": "pca", "model.in_features": 5})
    with pytest.raises(ConfigError, match=r"model\.in_features is set from the data"):
        trainlab.train(sized, progress=False)


@pytest.mark.parametrize("model", MODELS.list())
def test_feature_vector_input_builds_exactly_the_models_that_take_vectors(model):
    cfg = trainlab.load_config("default", {"model.name": model})
    if model in IMAGE_MODELS:
        with pytest.raises(ConfigError, match=f"model {model!r} takes images"):
            model_from_config(cfg, (12,), 10)
        return
    net = model_from_config(cfg, (12,), 10)
    x = torch.randn(5, 12, requires_grad=True)
    out = net(x)
    out.sum().backward()
    assert out.shape == (5, 10) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert trainlab.create_model(model, in_features=12)(x).shape == (5, 10)  # the public API


@pytest.mark.parametrize("mode", MODES)
def test_output_shape_is_the_shape_transform_returns(mode):
    images = torch.randint(0, 256, (200, 2, 5, 5), dtype=torch.uint8)
    options = {"k": 7} if mode in ("pca", "pca_whiten") else {}
    fitted = Standardizer(mode, **options).fit(images)
    assert fitted.output_shape((2, 5, 5)) == tuple(fitted.transform(images[:3]).shape[1:])
    assert fitted.output_shape((2, 5, 5)) == ((7,) if mode in ("pca", "pca_whiten") else (2, 5, 5))
