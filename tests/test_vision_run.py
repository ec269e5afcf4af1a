"""The vision runner end to end on tiny scene splits: the run directory, an exact resume, `trainlab eval`
(with --coco-json) reproducing the run's test metrics, `trainlab predict` in the image's own pixels, the
oracle-box baseline, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from tests.conftest import Interrupted, StopAt
from trainlab.cli import main
from trainlab.config import load_config, recipe_names
from trainlab.data.scenes import load_scenes
from trainlab.io import read_json
from trainlab.models import model_from_config
from trainlab.predict import load_trained
from trainlab.tasks import task_from_config
from trainlab.training.checkpoint import load_checkpoint, load_model_file
from trainlab.vision_predict import predict_image
from trainlab.vision_run import check_vision_config, crop_boxes, is_vision_run, oracle_baseline, train_vision

TINY = {
    "data.limit_train": 64, "data.val_size": 32, "data.limit_test": 32, "data.batch_size": 16,
    "data.eval_batch_size": 64, "train.epochs": 2, "train.device": "cpu", "optim.name": "adam",
    "optim.lr": 1e-3, "model.widths": [8, 16, 32],
}  # fmt: skip
DETECTION = {
    **TINY, "data.dataset": "fmnist-scenes", "task.name": "detection", "model.name": "centernet",
    "model.neck_width": 16, "model.head_width": 16, "data.augment": "flip,translate=2,scale=0.9-1.1",
}  # fmt: skip
LOCALIZATION = {
    **TINY,
    "data.dataset": "fmnist-scenes:localize",
    "task.name": "localization",
    "model.name": "locnet",
}


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory):
    """Scene splits are cached under TRAINLAB_DATA (Fashion-MNIST is still found in its own place)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINLAB_DATA", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture(scope="module")
def detection_run(scene_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "detect"
    trainlab.train(load_config(None, DETECTION), out, progress=False)  # the public call: a scenes run
    return out


def sets(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_a_localization_run_writes_its_directory_and_eval_reproduces_it(scene_cache, tmp_path, capsys):
    out = tmp_path / "loc"
    overrides = {**LOCALIZATION, "eval.oracle": None}  # the recipe's oracle trains a classifier
    assert main(["train", "--recipe", "scenes-localize", "--out", str(out), "--quiet", *sets(overrides)]) == 0
    summary = read_json(out / "summary.json")
    for key in ("test_accuracy", "test_mean_iou", "test_loc_accuracy"):
        assert 0 <= summary[key] <= 1
    assert summary["test_loc_accuracy"] <= summary["test_accuracy"]
    assert (
        summary["task"] == "localization" and summary["epochs_run"] == 2 and summary["num_test_scenes"] == 32
    )
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    stored = load_model_file(out / "model.safetensors")  # digest verified
    assert stored.image_shape == (1, 64, 64) and len(stored.classes) == 10
    for figure in ("curves.png", "predictions.png"):
        assert Image.open(out / figure).format == "PNG"
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("test_loss", "test_accuracy", "test_mean_iou", "test_loc_accuracy"):
        assert again[key] == summary[key]


def test_an_interrupted_detection_run_resumes_to_the_uninterrupted_result(detection_run, tmp_path):
    cfg = load_config(None, {**DETECTION, "train.checkpoint_steps": 1})
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        train_vision(cfg, out, callbacks=[StopAt(6)], progress=False)  # mid-way through epoch 2 of 4 steps
    # StopAt ran before the step-6 checkpoint (callbacks run in order): the resume point is step 5
    assert load_checkpoint(out / "checkpoints" / "last.safetensors")[1]["global_step"] == 5
    resumed = train_vision(cfg, out, resume=True, progress=False)
    whole = read_json(detection_run / "summary.json")
    for key in ("test_loss", "test_ap", "test_ap50", "test_ar100"):
        assert resumed.summary[key] == whole[key]
    a, b = (load_model_file(d / "model.safetensors").tensors for d in (detection_run, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_writes_the_test_detections_in_coco_results_format(detection_run, tmp_path, capsys):
    path = tmp_path / "dets.json"
    assert main(["eval", str(detection_run), "--coco-json", str(path)]) == 0
    assert "test ap" in capsys.readouterr().out
    results = json.loads(path.read_text())
    assert results, "no detections written"
    assert {r["image_id"] for r in results} <= set(range(1, 33))  # scene index + 1
    assert {r["category_id"] for r in results} <= set(range(1, 11))  # class + 1
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 for r in results)


INSTANCE = {
    **TINY, "data.dataset": "fmnist-scenes", "task.name": "instance", "model.name": "instance_unet",
    "model.widths": [8, 16, 32], "optim.lr": 1e-2,
}  # fmt: skip


@pytest.mark.parametrize(
    "overrides, iou_type, prefix",
    [
        ({**DETECTION, "data.limit_train": 512, "train.epochs": 3, "optim.lr": 3e-3}, "bbox", "test_"),
        ({**INSTANCE, "data.limit_train": 256, "train.epochs": 2}, "segm", "test_mask_"),
    ],
    ids=["detection-bbox", "instance-segm"],
)
def test_pycocotools_scores_the_exported_scenes_and_the_eval_json_as_trainlab_does(
    scene_cache, tmp_path, capsys, overrides, iou_type, prefix
):
    """A trained model's own detections, through the files a COCO user would read: `trainlab data export`
    (the ground truth) and `trainlab eval --coco-json` (the results), scored by COCOeval, give the
    run's test AP, AP50, AP75, AR@100 and class-agnostic AP (useCats=0), boxes or masks (the same 32
    test scenes: --n 32 is the run's data.limit_test). A few seconds of training: a model that finds
    some items, so that the comparison is not 0 = 0."""
    pytest.importorskip("pycocotools", reason="pycocotools (the coco extra) is not installed")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run, dets = tmp_path / "run", tmp_path / "dets.json"
    train_vision(load_config(None, overrides), run, progress=False)
    assert main(["eval", str(run), "--coco-json", str(dets)]) == 0
    ours = read_json(run / "summary.json")
    argv = ["data", "export", "fmnist-scenes", "--split", "test", "--n", "32", "--format", "coco"]
    assert main([*argv, "--out", str(tmp_path / "coco")]) == 0
    capsys.readouterr()
    truth = COCO(str(tmp_path / "coco" / "instances_test.json"))
    theirs = {}
    for use_cats, keys in ((1, ("ap", "ap50", "ap75")), (0, ("class_agnostic_ap",))):
        scored = COCOeval(truth, truth.loadRes(str(dets)), iou_type)
        scored.params.useCats = use_cats
        scored.evaluate(), scored.accumulate(), scored.summarize()
        theirs.update(zip(keys, scored.stats))
        if use_cats:
            theirs["ar100"] = scored.stats[8]
    assert ours[f"{prefix}class_agnostic_ap"] > 0.01  # it finds items: the comparison is not 0 = 0
    for key, value in theirs.items():
        assert ours[prefix + key] == pytest.approx(value, abs=1e-4), key


def write_png(path, pixels: np.ndarray):
    Image.fromarray(pixels).save(path)
    return path


def test_predict_gives_boxes_in_the_pixels_of_an_image_of_any_size(
    detection_run, scene_cache, tmp_path, capsys
):
    scene = load_scenes("fmnist-scenes", "test", n=32).images[0, 0].numpy()
    small = write_png(tmp_path / "scene.png", scene)
    large = write_png(tmp_path / "large.png", scene.repeat(2, 0).repeat(3, 1))  # 128 rows, 192 columns
    trained = load_trained(detection_run, "cpu")
    native = predict_image(trained, small, min_score=0.0)
    # the canvas itself: the boxes are the decoded ones, in its pixels
    dets = trained.predictor.task.decode(trained.outputs(torch.from_numpy(scene)[None, None]))
    kept = dets.scores >= 0.0
    assert np.allclose(native["boxes"], dets.boxes[kept].numpy(), atol=0.01)  # rounded to 2 decimals
    stretched = predict_image(trained, large, tmp_path / "drawn.png", min_score=0.0)
    assert (stretched["width"], stretched["height"]) == (192, 128)
    boxes = np.array(stretched["boxes"]).reshape(-1, 4)
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 192) and np.all(boxes[:, [1, 3]] <= 128)
    assert Image.open(tmp_path / "drawn.png").size[0] >= 192
    capsys.readouterr()
    assert main(["predict", str(detection_run), str(small), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert set(entry) >= {"file", "width", "height", "boxes", "scores", "labels", "classes"}
    assert all(s >= 0.3 for s in entry["scores"])


def test_crops_map_a_box_onto_the_28_pixel_frame():
    images = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    images[0, 0, 16:48, 24:40] = 255  # a box 16 wide, 32 high
    crop = crop_boxes(images, torch.tensor([0]), torch.tensor([[24.0, 16.0, 40.0, 48.0]]))[0, 0]
    assert crop.shape == (28, 28)
    rows = (crop > 127).any(1).nonzero().flatten()
    cols = (crop > 127).any(0).nonzero().flatten()
    # the long side fills 26 of 28 pixels, centred; the short one is half as wide
    assert (int(rows[0]), int(rows[-1])) == (1, 26)
    assert abs(int(cols[-1]) - int(cols[0]) + 1 - 13) <= 1 and abs((cols[0] + cols[-1]) / 2 - 13.5) <= 0.5


def test_the_oracle_has_one_ap_at_every_iou_threshold(scene_cache, tmp_path):
    classifier = tmp_path / "classifier"
    small = {"data.limit_train": 512, "data.val_size": 0, "train.epochs": 1, "train.device": "cpu",
             "model.name": "mlp", "model.widths": [32], "train.tta": False, "data.augment": ""}  # fmt: skip
    assert main(["train", "--out", str(classifier), "--quiet", *sets(small)]) == 0
    scenes = load_scenes("fmnist-scenes", "test", n=32)
    result = oracle_baseline(scenes, classifier, torch.device("cpu"))
    # the boxes are the true ones: every match has IoU 1, so AP is the same at IoU .5 and .5:.95
    assert result["test_oracle_ap"] == pytest.approx(result["test_oracle_ap50"], abs=1e-12)
    assert 0 <= result["test_oracle_accuracy"] <= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "fmnist-scenes", "--task", "classification"], "expected task.name one of"),
        (["train", "--dataset", "fashion-mnist", "--task", "detection"], "trains on Fashion-MNIST scenes"),
        (
            ["train", "--dataset", "fmnist-scenes", "--task", "detection", "--set", "train.tta=true"],
            "train.tta",
        ),
        (
            ["train", "--dataset", "fmnist-scenes", "--task", "detection", "--augment", "rotate=3"],
            "data.augment",
        ),
        (["train", "--dataset", "fmnist-scenes", "--task", "detection", "--nproc", "2"], "--nproc"),
    ],
)
def test_bad_vision_runs_are_one_line_errors(args, message, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error:") and message in err and err.count("\n") == 1


def test_bad_predict_and_eval_arguments_are_one_line_errors(detection_run, tmp_path, capsys):
    png = write_png(tmp_path / "a.png", np.zeros((64, 64), np.uint8))
    cases = [
        (
            ["predict", str(detection_run), str(png), str(png), "--out", str(tmp_path / "x.png")],
            "--out draws one",
        ),
        (["predict", str(detection_run), str(tmp_path / "missing.png")], "missing.png"),
        (["eval", str(tmp_path), "--coco-json", str(tmp_path / "d.json")], "not a detection run"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("trainlab: error:") and message in err, err


@pytest.mark.parametrize("name", [n for n in recipe_names() if n.startswith("scenes-")])
def test_every_scenes_recipe_is_a_vision_run_whose_model_fits_its_task(name):
    cfg = load_config(name)
    assert is_vision_run(cfg)
    check_vision_config(cfg)  # its augmentation spec included
    model = model_from_config(cfg, (1, 64, 64), 10).eval()
    targets = {
        "labels": torch.tensor([[3], [7]]),
        "boxes": torch.tensor([[[10.0, 12.0, 30.0, 40.0]], [[0.0, 0.0, 64.0, 64.0]]]),
        "instances": torch.zeros(2, 64, 64, dtype=torch.uint8),
    }
    targets["instances"][0, 12:40, 10:30] = 1
    targets["instances"][1] = 1
    loss = task_from_config(cfg).loss(model(torch.zeros(2, 1, 64, 64)), targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
