"""ONNX export (trainlab.export), checked by a real runtime: onnxruntime's outputs against the run's torch
eval path on CPU, for every model family at batch sizes 1, 7 and 256, every preprocessing mode, with
TTA, and on all 10k Fashion-MNIST test images for a trained model.

TOLERANCE is the issue's 1e-5 on outputs up to ~3 (docs/export.md derives why no a-priori float32
bound helps here, and what 1e-5 means in eps): the test models' logits are scaled to a largest
|logit| of 3, as a trained model's, so that 1e-5 is ~28 eps of their magnitude and not a free pass for
near-zero outputs; test_tta_is_in_the_graph_and_the_tolerance_tells_it_apart shows that a wrong graph
falls outside it."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import trainlab
from trainlab.cli import main
from trainlab.data.preprocess import MODES, Standardizer
from trainlab.errors import TrainlabError
from trainlab.export import (
    TOLERANCE,
    compare_with_torch,
    export_onnx,
    export_predictor,
    onnx_outputs,
    onnx_session,
)
from trainlab.inference import Predictor
from trainlab.models import model_from_config
from trainlab.predict import load_trained
from trainlab.training.checkpoint import prefixed, save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FAMILIES = ["mlp", "cnn", "lenet5", "alexnet", "vgg11_bn", "googlenet", "resnet18", "speednet"]
HEAVY = {"alexnet", "vgg11_bn", "googlenet", "resnet18"}  # a batch of 256 takes seconds in torch alone
LARGEST_LOGIT = 3.0
CASES = [
    pytest.param(name, batch, marks=[pytest.mark.slow] if batch == 256 and name in HEAVY else [])
    for name in FAMILIES
    for batch in (1, 7, 256)
]


def saved_run(
    run_dir: Path, data, model: str, preprocess: str, tta: bool, options: dict | None = None
) -> Path:
    """A run directory holding model.safetensors as trainlab.run writes it (weights, fitted preprocessing,
    config, classes, image shape), without training: batch-norm running statistics drawn at random, as
    a trained model's are not 0 and 1, and the head scaled to a largest |logit| of LARGEST_LOGIT."""
    overrides = {"data.dataset": "fashion-mnist", "model.name": model, "data.preprocess": preprocess}
    cfg = trainlab.load_config(None, {**overrides, "train.tta": tta, **(options or {})})
    standardizer = Standardizer(cfg.data.preprocess, **cfg.data.preprocess_options).fit(
        data.train_images[:2000]
    )
    torch.manual_seed(0)
    net = model_from_config(cfg, standardizer.output_shape(tuple(data.image_shape)), data.num_classes).eval()
    heads: list[torch.nn.Linear] = []
    hooks = [m.register_forward_hook(lambda m, i, o: heads.append(m)) for m in net.modules() if
             isinstance(m, torch.nn.Linear)]  # fmt: skip
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "running_var", None) is not None:
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        largest = net(standardizer.transform(data.test_images[:64])).abs().max()
        for p in heads[-1].parameters():  # the outputs are linear in the last layer's weight and bias
            p.mul_(LARGEST_LOGIT / largest)
    for hook in hooks:
        hook.remove()
    meta = {"config": cfg.to_dict(), "classes": data.classes, "image_shape": list(data.image_shape)}
    tensors = {**prefixed("model", net.state_dict()), **prefixed("preprocess", standardizer.state_dict())}
    save_checkpoint(run_dir / "model.safetensors", tensors, meta)
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fashion_mnist):
    """exported(model, preprocess, tta) -> (trained torch model, path of its .onnx), each built once."""
    cache: dict[tuple, tuple] = {}

    def build(
        model: str, preprocess: str = "channel_mean_std", tta: bool = True, options: dict | None = None
    ):
        key = (model, preprocess, tta, json.dumps(options))
        if key not in cache:
            run = saved_run(tmp_path_factory.mktemp(model), fashion_mnist, model, preprocess, tta, options)
            export_onnx(run, run / "model.onnx")
            cache[key] = (load_trained(run, device="cpu"), run / "model.onnx")
        return cache[key]

    return build


def run_dir(exported) -> Path:
    """The run directory of the cnn with TTA that most tests share."""
    return exported("cnn")[1].parent


@pytest.mark.parametrize(("model", "batch"), CASES)
def test_onnxruntime_matches_the_torch_eval_path(model, batch, exported, fashion_mnist):
    trained, path = exported(model)
    result = compare_with_torch(trained, path, fashion_mnist.test_images[:batch], batch_size=batch)
    assert result["max_abs_output"] > LARGEST_LOGIT / 10  # outputs of this size: the tolerance is not free
    assert result["max_abs_diff"] <= TOLERANCE
    assert result["top1_agreement"] == 1.0


def test_the_graph_takes_uint8_images_with_a_dynamic_batch(exported):
    trained, path = exported("cnn")
    session = onnx_session(path)
    (images,), (logits,) = session.get_inputs(), session.get_outputs()
    assert images.type == "tensor(uint8)" and images.shape == ["batch", 1, 28, 28]
    assert logits.type == "tensor(float)" and logits.shape == ["batch", 10]
    import onnx

    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["trainlab_classes"]) == trained.classes


@pytest.mark.parametrize("mode", MODES)
def test_every_preprocessing_mode_is_in_the_graph(mode, exported, fashion_mnist):
    vectors = mode in ("pca", "pca_whiten")  # (N, k) features, for a model that takes vectors
    model, options = ("mlp", {}) if vectors else ("cnn", {"model.widths": [8, 8, 16]})
    trained, path = exported(model, mode, tta=False, options=options)
    result = compare_with_torch(trained, path, fashion_mnist.test_images[:7], batch_size=7)
    assert result["max_abs_diff"] <= TOLERANCE
    assert result["top1_agreement"] == 1.0


def test_tta_is_in_the_graph_and_the_tolerance_tells_it_apart(exported, fashion_mnist):
    trained, path = exported("cnn")
    images = fashion_mnist.test_images[:7]
    p = trained.predictor
    without_tta = Predictor(p.model, p.task, p.transform, tta=False).outputs(images)
    got = compare_with_torch(trained, path, images, batch_size=7)
    assert got["max_abs_diff"] <= TOLERANCE
    assert (onnx_outputs(onnx_session(path), images) - without_tta).abs().max() > 100 * TOLERANCE


def test_top1_agrees_on_all_10k_fashion_mnist_test_images(fashion_mnist, tmp_path):
    """A trained model (1 epoch on 2000 images, TTA on): onnxruntime's top-1 on the whole test split is
    torch's, so its accuracy is exactly the one the run's final evaluation wrote into summary.json."""
    small = {"data.limit_train": 2000, "train.epochs": 1, "train.device": "cpu", "train.compile": False}
    cfg = trainlab.load_config("default", {"model.name": "mlp", "train.tta": True, **small})
    trainlab.train(cfg, tmp_path / "run", progress=False)
    export_onnx(tmp_path / "run", tmp_path / "model.onnx")
    trained = load_trained(tmp_path / "run", device="cpu")
    result = compare_with_torch(trained, tmp_path / "model.onnx", fashion_mnist.test_images)
    assert result["images"] == 10_000
    assert result["max_abs_diff"] <= TOLERANCE
    assert result["top1_agreement"] == 1.0
    predicted = onnx_outputs(onnx_session(tmp_path / "model.onnx"), fashion_mnist.test_images).argmax(1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert float((predicted == fashion_mnist.test_labels).float().mean()) == summary["test_accuracy"]


def test_a_bf16_channels_last_run_exports_its_float32_path(exported, fashion_mnist):
    """bf16 is the torch path's autocast, not the weights: the graph is the run's float32 path, which
    channels_last (a memory format) does not change."""
    options = {"model.widths": [8, 8, 16], "train.precision": "bf16", "train.channels_last": True}
    trained, path = exported("cnn", options=options)
    p = trained.predictor
    assert p.bf16 and p.channels_last
    images = fashion_mnist.test_images[:7]
    float32 = Predictor(p.model, p.task, p.transform, p.tta, bf16=False, channels_last=True).outputs(images)
    assert (onnx_outputs(onnx_session(path), images) - float32).abs().max() <= TOLERANCE


def test_a_model_in_train_mode_is_refused_and_nothing_is_written(exported, tmp_path):
    trained = load_trained(run_dir(exported), device="cpu")  # its own copy: the model is put in train mode
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    trained.model.train()
    with pytest.raises(TrainlabError, match="train mode") as error:
        export_predictor(trained.predictor, trained.image_shape, out, {})
    assert "\n" not in str(error.value)
    assert out.read_bytes() == b"the previous export"
    assert sorted(tmp_path.iterdir()) == [out]


def test_a_graph_that_disagrees_with_torch_is_not_written(exported, tmp_path, monkeypatch):
    import trainlab.export

    real = trainlab.export.onnx_outputs
    monkeypatch.setattr(trainlab.export, "onnx_outputs", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(TrainlabError, match="not written: onnxruntime's outputs differ"):
        export_onnx(run_dir(exported), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_writes_the_graph(exported, tmp_path, capsys):
    out = tmp_path / "exported" / "model.onnx"
    assert main(["export", str(run_dir(exported)), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"{out}: uint8 images [batch, 1, 28, 28] -> logits") and "TTA" in printed
    assert "\n" not in printed
    assert onnx_session(out).get_inputs()[0].type == "tensor(uint8)"


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_a_missing_extra_is_one_line_naming_it(module, exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    code = main(["export", str(run_dir(exported)), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("trainlab: error: ") and f"({module} is not installed)" in err
    assert "pip install 'trainlab[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{tmp}/no-run", "--format", "onnx", "--out", "{tmp}/m.onnx"], "no model.safetensors"),
        (["export", "{run}", "--format", "tflite", "--out", "{tmp}/m.onnx"], "invalid choice: 'tflite'"),
        (["export", "{run}", "--format", "onnx", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(args, message, exported, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, run=run_dir(exported)) for a in args]
    with pytest.raises(SystemExit) if "tflite" in args else nullcontext() as ended:  # argparse exits
        code = main(args)
    code = ended.value.code if ended else code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
