"""Test-time augmentation as a policy (eval.tta): parsing and its one-line errors, what each view is,
and that the final evaluation, `trainlab eval` and `trainlab predict` in a fresh process (fastai #2764:
TTA lost after a reload) and the exported graph all apply the run's saved policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from torch import nn

import trainlab
from trainlab.errors import ConfigError
from trainlab.inference import Predictor
from trainlab.tasks import create_task
from trainlab.tasks.tta import TTAPolicy, parse_tta, tta_of

SMALL = {
    "data.dataset": "mnist", "data.limit_train": 256, "data.val_size": 44, "data.batch_size": 64,
    "model.widths": [8, 8, 16], "train.epochs": 1, "train.device": "cpu",
}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "policy", "views"),
    [("none", TTAPolicy(), 1), ("flip", TTAPolicy(flip=True), 2), ("shift=2", TTAPolicy(shift=2), 5),
     ("flip,shift=2", TTAPolicy(True, 2), 10), (" Shift=3 , flip ", TTAPolicy(True, 3), 10),
     (True, TTAPolicy(flip=True), 2), (False, TTAPolicy(), 1)],
)  # fmt: skip
def test_policies_parse(spec, policy, views):
    parsed = parse_tta(spec)
    assert parsed == policy and parsed.num_views == views and parse_tta(str(parsed)) == parsed
    assert bool(parsed) == (views > 1)


def test_eval_tta_overrides_train_tta_and_unset_follows_it():
    assert tta_of(None, True) == TTAPolicy(flip=True) and tta_of(None, False) == TTAPolicy()
    assert tta_of("shift=1", True) == TTAPolicy(shift=1) and tta_of("none", True) == TTAPolicy()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flp", r"unknown test-time augmentation 'flp'; did you mean 'flip'\?"),
        ("shift=0", r"shift takes a whole number of pixels from 1 to 8 \(e\.g\. 'shift=2'\), got 'shift=0'"),
        ("shift=9", r"from 1 to 8"),
        ("shift=two", r"got 'shift=two'"),
        ("shift", r"got 'shift'"),
        ("flip=1", r"'flip' takes no value"),
        ("flip,flip", r"'flip' appears twice"),
        ("flip,,shift=2", r"unknown test-time augmentation ''"),
    ],
)
def test_bad_policies_are_one_line_errors_that_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_tta(spec)
    assert str(error.value).startswith(f"eval.tta={spec!r}: ") and "\n" not in str(error.value)


def test_a_bad_policy_stops_train_before_any_work_with_one_line(tmp_path, capsys):
    from trainlab.cli import main

    assert main(["train", "--set", "eval.tta=flip,shift=20", "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("trainlab: error: eval.tta='flip,shift=20': ") and error.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_each_shift_moves_the_image_by_s_pixels_and_repeats_the_edge():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0  # one bright pixel in the middle
    x[0, 0, :, 0] = 0.5  # and a grey left column, which a shift to the right must repeat
    views = list(TTAPolicy(shift=1).views(x))
    bright = [tuple(int(i) for i in (v[0, 0] == 1.0).nonzero()[0]) for v in views]
    assert bright == [(2, 2), (2, 3), (2, 1), (3, 2), (1, 2)]  # itself, right, left, down, up
    assert (views[1][0, 0, :, :2] == 0.5).all()  # moved right: the grey column fills the gap
    flipped = list(TTAPolicy(flip=True, shift=1).views(x))
    assert len(flipped) == 10 and torch.equal(flipped[5], x.flip(-1))


def test_infer_is_the_mean_of_the_model_over_the_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 3)).eval()
    x = torch.randn(4, 1, 28, 28)
    task = create_task("classification")
    policy = TTAPolicy(flip=True, shift=2)
    expected = torch.stack([model(v) for v in policy.views(x)]).mean(0)
    got = task.infer(model, x, "flip,shift=2")
    # 10 outputs summed then scaled: at most 10 roundings of the sum of their magnitudes
    bound = (
        10 * torch.finfo(torch.float32).eps * torch.stack([model(v).abs() for v in policy.views(x)]).sum(0)
    )
    assert ((got - expected).abs() <= bound).all()
    assert not torch.allclose(got, task.infer(model, x, "flip"), atol=1e-4)


def test_eval_and_predict_in_a_fresh_process_apply_the_saved_policy(tiny_mnist, tmp_path, no_report):
    """The policy lives in the run's config, inside model.safetensors: a new process that loads the run
    evaluates with it (summary.json's test loss, exactly) and predicts with it (the policy's
    probabilities, not those of the model alone or of the mirror alone)."""
    run = tmp_path / "run"
    trainlab.train(
        trainlab.load_config("default", {**SMALL, "eval.tta": "flip,shift=2"}), run, progress=False
    )
    summary = json.loads((run / "summary.json").read_text())
    images = trainlab.load_dataset("mnist").test_images[:3]
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image[0].numpy()).save(files[-1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = (
        "import json, sys; from trainlab.predict import evaluate_run, load_trained, predict_files\n"
        "run = sys.argv[1]; result = evaluate_run(run, 'cpu')\n"
        "predicted = predict_files(load_trained(run, 'cpu'), sys.argv[2:], 10)\n"
        "print(json.dumps({'eval': result, 'predict': predicted}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(run), *files], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = json.loads(done.stdout)
    assert fresh["eval"]["test_loss"] == summary["test_loss"]
    assert fresh["eval"]["test_accuracy"] == summary["test_accuracy"]

    trained = trainlab.load_trained(run, device="cpu")
    assert trained.predictor.tta == TTAPolicy(flip=True, shift=2)
    p = trained.predictor
    with_policy = torch.softmax(p.outputs(images), 1)
    alone = torch.softmax(Predictor(p.model, p.task, p.transform, tta=False).outputs(images), 1)
    mirror = torch.softmax(Predictor(p.model, p.task, p.transform, tta="flip").outputs(images), 1)
    got = torch.zeros(3, 10)
    for row, item in enumerate(fresh["predict"]):
        for entry in item["predictions"]:
            got[row, entry["index"]] = entry["probability"]
    band = 8 * torch.finfo(torch.float32).eps  # probabilities <= 1, a few roundings of the same arithmetic
    assert torch.allclose(got, with_policy, rtol=0, atol=band)
    assert not torch.allclose(alone, with_policy, rtol=0, atol=band)
    assert not torch.allclose(mirror, with_policy, rtol=0, atol=band)


def test_export_puts_the_shift_policy_in_the_graph(tiny_mnist, tmp_path, no_report):
    pytest.importorskip("onnxruntime")
    from trainlab.export import TOLERANCE, export_onnx, onnx_outputs, onnx_session

    run = tmp_path / "run"
    trainlab.train(trainlab.load_config("default", {**SMALL, "eval.tta": "shift=2"}), run, progress=False)
    exported = export_onnx(run, tmp_path / "model.onnx", progress=False)
    assert str(exported.tta) == "shift=2"
    images = trainlab.load_dataset("mnist").test_images[:7]
    trained = trainlab.load_trained(run, device="cpu")
    p = trained.predictor
    got = onnx_outputs(onnx_session(tmp_path / "model.onnx"), images)
    assert (got - p.outputs(images)).abs().max() <= TOLERANCE * max(1.0, float(p.outputs(images).abs().max()))
    alone = Predictor(p.model, p.task, p.transform, tta=False).outputs(images)
    assert (got - alone).abs().max() > 100 * TOLERANCE
