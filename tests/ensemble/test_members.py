"""Independent ensembles trained through `trainlab.train`: the members are their own runs (bit for bit
when trained one after another, to float32 rounding when grouped), a resume mid-epoch is bit-identical,
and the directory is an ensemble that `trainlab eval` / `predict` use from a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from tests.conftest import Interrupted, StopAt, write_tiny_mnist
from tests.tolerance import assert_float32_close
from trainlab.cli import main
from trainlab.data.datasets import load_dataset
from trainlab.ensemble.build import build_ensemble
from trainlab.ensemble.evaluate import load_ensemble
from trainlab.predict import load_trained
from trainlab.training.checkpoint import load_checkpoint, save_checkpoint, unprefixed

# SpeedNet as cpu-fast trains it (patch whitening, BN, one-cycle Nesterov SGD, label smoothing, hflip,
# flip TTA), tiny. data.val_size=0: every seed's training split is the whole (sorted) training set, so a
# member's single run (train.seed = its seed) sees the member's data.
TINY = {"data.dataset": "mnist", "data.val_size": 0, "data.limit_train": 64, "data.batch_size": 32,
        "model.widths": [4, 8, 8], "train.epochs": 1, "train.device": "cpu"}  # fmt: skip


def config(**overrides):
    return trainlab.load_config("cpu-fast", {**TINY, **overrides})


def weights(path):
    return unprefixed("model", load_checkpoint(path)[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Single runs with seeds 0 and 1, and the 2-member ensemble of those seeds, trained one member after
    another and grouped: on the tiny generated MNIST (tests/conftest.py), trained once for the module."""
    root = tmp_path_factory.mktemp("ensemble-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINLAB_DATA", str(root / "data"))
        write_tiny_mnist(root / "data" / "mnist")
        for seed in (0, 1):
            trainlab.train(config(**{"train.seed": seed}), root / f"s{seed}", progress=False)
        for engine in ("sequential", "grouped"):
            cfg = config(**{"ensemble.members": 2, "ensemble.engine": engine})
            assert trainlab.train(cfg, root / engine, progress=False).summary["ensemble_engine"] == engine
        yield root


def test_members_trained_one_after_another_are_their_single_runs_bit_for_bit(runs):
    for seed in (0, 1):
        want = weights(runs / f"s{seed}" / "model.safetensors")
        got = weights(runs / "sequential" / "members" / f"member-{seed}.safetensors")
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert not torch.equal(*(weights(runs / f"s{s}" / "model.safetensors")["head.weight"] for s in (0, 1)))


def test_grouped_members_equal_the_members_trained_one_after_another(runs):
    """2 steps. Grouped and plain kernels add the same products in other orders: each weight differs by
    the rounding of the dot products behind its gradients, at most (fan-in x layers) roundings of the
    gradient's scale per step, which lr * (1 + momentum) carries into the weight (Higham 2002, 3.1)."""
    fan_in, layers, steps, lr_reach = 9 * 8, 8, 2, 0.2 * 1.9
    for m in range(2):
        grouped, sequential = (weights(runs / e / "members" / f"member-{m}.safetensors")
                               for e in ("grouped", "sequential"))  # fmt: skip
        for k, w in sequential.items():
            if w.is_floating_point():
                scale = lr_reach * steps * (w.abs().max() + 1)
                assert_float32_close(grouped[k], w, ops=fan_in * layers, scale=scale)


def test_resume_mid_epoch_of_an_ensemble_is_bit_identical(tiny_mnist, tmp_path):
    """4 steps an epoch, a resume point every 3: stopped at step 7 (epoch 2, every member mid-epoch),
    resumed from step 6; the members, the metrics and the summary are those of the uninterrupted run."""
    overrides = {"ensemble.members": 2, "data.limit_train": 128, "train.epochs": 2, "data.val_size": 40,
                 "train.checkpoint_steps": 3, "data.augment": "hflip,mixup=0.2"}  # fmt: skip
    cfg = config(**overrides)
    trainlab.train(cfg, tmp_path / "reference", progress=False)
    with pytest.raises(Interrupted):
        trainlab.train(cfg, tmp_path / "resumed", callbacks=[StopAt(7)], progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors")[1]["progress"]
    trainlab.train(cfg, tmp_path / "resumed", resume=True, progress=False)
    for m in range(2):
        name = f"members/member-{m}.safetensors"
        want, got = (load_checkpoint(tmp_path / d / name)[0] for d in ("reference", "resumed"))
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    timing = lambda s: {k: v for k, v in s.items() if "seconds" not in k}  # noqa: E731
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("reference", "resumed")]
    assert timing(summaries[0]) == timing(summaries[1])


def test_eval_and_predict_on_an_ensemble_directory_from_a_fresh_process(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    trainlab.train(config(**{"ensemble.members": 3, "data.val_size": 40, "ensemble.combine": "weighted"}),
                   run, progress=False)  # fmt: skip
    assert not (run / "model.safetensors").exists()
    summary = json.loads((run / "summary.json").read_text())
    cli = [sys.executable, "-m", "trainlab.cli"]
    evaluated = subprocess.run([*cli, "eval", str(run), "--json", "--device", "cpu"], capture_output=True,
                               check=True, text=True)  # fmt: skip
    result = json.loads(evaluated.stdout)
    for key in ("test_accuracy", "test_loss", "test_nll", "test_ece", "member_test_accuracy",
                "member_disagreement", "deep_ensemble_equivalent", "temperature",
                "ensemble_nll_ts_by_members", "deep_ensemble_equivalent_ts"):  # fmt: skip
        assert result[key] == summary[key], key

    images = load_dataset("mnist").test_images[:2]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    predicted = subprocess.run([*cli, "predict", str(run), *map(str, files), "--json", "--top-k", "10"],
                               capture_output=True, check=True, text=True)  # fmt: skip
    entries = json.loads(predicted.stdout)
    ensemble = load_ensemble(run, "cpu")
    expected = ensemble.probabilities(images)  # in this process: the members, weighted by val accuracy
    for entry, want in zip(entries, expected):
        got = torch.zeros(10)
        for p in entry["predictions"]:
            got[p["index"]] = p["probability"]
        assert (got - want).abs().max() <= 1e-6


def test_an_ensemble_of_identical_members_predicts_as_the_member(runs, tmp_path):
    run = runs / "s0"
    images = tiny_test_images(runs)[:50]
    single = load_trained(run, "cpu").probabilities(images)
    for rule in ("mean_prob", "mean_logit"):
        build_ensemble([run, run, run], tmp_path / rule, rule)
        assert (load_ensemble(tmp_path / rule, "cpu").probabilities(images) - single).abs().max() <= 1e-6


def test_ensemble_of_runs_with_other_classes_or_datasets_is_refused_in_one_line(runs, tmp_path, capsys):
    """A run of another dataset, and one whose classes are in another order: constructed model files."""
    a = runs / "s0"
    tensors, meta = load_checkpoint(a / "model.safetensors")
    save_checkpoint(tmp_path / "b" / "model.safetensors", tensors, {**meta, "classes": meta["classes"][::-1]})
    other = {**meta["config"], "data": {**meta["config"]["data"], "dataset": "fashion-mnist"}}
    save_checkpoint(tmp_path / "c" / "model.safetensors", tensors, {**meta, "config": other})
    for run, what in (("b", "classes"), ("c", "dataset 'fashion-mnist' differs from 'mnist'")):
        assert main(["ensemble", str(a), str(tmp_path / run), "--out", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and what in error and "differs" in error
    assert not (tmp_path / "out").exists()


def test_grad_clip_is_refused_for_an_ensemble_in_one_line(tiny_mnist, capsys):
    args = ["train", "--set", "ensemble.members=2", "--set", "train.grad_clip=1.0",
            "--set", "data.dataset=mnist", "--set", "data.val_size=0", "--quiet"]  # fmt: skip
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "train.grad_clip" in error


def test_vote_ties_in_a_real_ensemble_go_to_the_lowest_class(runs, tmp_path):
    """Two members: where they disagree, each class has one vote, and the ensemble's class is the lower."""
    build_ensemble([runs / "s0", runs / "s1"], tmp_path / "vote", "vote")
    images = tiny_test_images(runs)
    votes = np.stack([load_trained(runs / f"s{s}", "cpu").probabilities(images).argmax(1) for s in (0, 1)])
    assert (votes[0] != votes[1]).any()  # the test has ties to break
    got = load_ensemble(tmp_path / "vote", "cpu").probabilities(images).argmax(1).numpy()
    assert (got == votes.min(0)).all()


def tiny_test_images(runs):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINLAB_DATA", str(runs / "data"))
        return load_dataset("mnist").test_images
