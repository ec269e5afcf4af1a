"""ONNX export of a finished run: one graph from raw uint8 images to the run's outputs.

The graph is the run's own inference path (trainlab.inference.Predictor), traced on CPU:

    images uint8 (N, C, H, W) -> float in [0, 1] -> the fitted preprocessing (trainlab.data.preprocess:
    its statistics become constants, the pca modes' projection to (N, k) included) -> the model in eval
    mode -> with a test-time augmentation policy (trainlab.tasks.tta: flip, shift=N), the mean over
    its views (Task.infer: the shifts are an edge pad and slices, so every policy is in the graph)
    -> float32 (N, K): a classifier's logits, another task's outputs

The batch size N is dynamic; C, H and W are the run's. The graph computes in float32: a run's bf16 is
an autocast setting of the torch path, not part of its weights. Class names, the image shape and the
run's config go into the model's metadata_props.

    trainlab export RUN --format onnx --out model.onnx
    session = onnx_session("model.onnx"); logits = onnx_outputs(session, images)

Exporter: torch.onnx.export(dynamo=False), the TorchScript tracer. These models are feed-forward, with
no data-dependent control flow, so a trace is the whole graph, and it needs only the onnx package; the
dynamo exporter, torch's default since 2.9, needs onnxscript besides (and torch warns that the tracer
is deprecated: the warning is silenced here, tests/test_export.py checks every model family).
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainlab.errors import TrainlabError
from trainlab.inference import Predictor
from trainlab.io import atomic_write_bytes
from trainlab.predict import TrainedModel, load_trained
from trainlab.progress import progress_bar
from trainlab.tasks.tta import TTAPolicy

EXTRA = "pip install 'trainlab[onnx]'"
OPSET = 17  # onnxruntime >= 1.14 runs it; every op these graphs use is in it
INPUT_NAME = "images"
CHECK_BATCH = 7
TOLERANCE = 1e-5  # the largest |onnxruntime - torch| output difference at outputs up to 1 (docs/export.md)


class InferenceGraph(nn.Module):
    """Predictor.outputs without its autocast and mode switch, as one module for the tracer."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.model = predictor.model  # registered, so its weights are the graph's initialisers
        self.predictor = predictor

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # uint8 (N, C, H, W) -> (N, K)
        p = self.predictor
        return p.task.infer(self.model, p.inputs(images), p.tta)


def require(module: str, purpose: str) -> Any:
    """Import an optional extra's module, or one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrainlabError(f"{purpose} needs the onnx extra ({module} is not installed): {EXTRA}") from None


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a module in train mode: its batch norm would normalise with each batch's statistics and its
    dropout would drop units, so the exported graph would not be the model that was evaluated."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise TrainlabError(
            f"cannot export a model in train mode ({len(training)} modules, first {training[0]!r}): "
            "call model.eval() first, so that batch norm uses its running statistics and dropout is off"
        )


def output_name(predictor: Predictor) -> str:
    return "logits" if predictor.task.name == "classification" else "outputs"


@dataclass
class Exported:
    path: Path
    input_shape: list[int | str]  # ["batch", C, H, W], uint8
    output: str  # logits or outputs
    preprocess: str
    tta: TTAPolicy  # false when the graph has no test-time augmentation
    max_abs_diff: float  # onnxruntime against torch on the check batch
    max_abs_output: float


def export_predictor(
    predictor: Predictor, image_shape: tuple[int, int, int], out: Path | str, metadata: dict[str, str]
) -> Exported:
    """Write the ONNX graph of `predictor` for uint8 images of `image_shape` (C, H, W) to `out`. The
    graph is run by onnxruntime on a batch of CHECK_BATCH random images first, and written only if it
    agrees with torch (check_agreement); the write is atomic (trainlab.io), so `out` is the old file
    or the new, checked one, never half of one."""
    onnx = require("onnx", "ONNX export")
    check_eval_mode(predictor.model)
    if next(predictor.model.parameters()).device.type != "cpu":
        raise TrainlabError("ONNX export traces on CPU: move the model there first (model.cpu())")
    out = Path(out)
    if out.is_dir():
        raise TrainlabError(f"{out}: is a directory (expected the path of the .onnx file to write)")
    # eval: the exporter puts the module back in its mode afterwards, and a new module's is train,
    # which would switch the model's batch norm and dropout to training too
    graph, buffer = InferenceGraph(predictor).eval(), io.BytesIO()
    name = output_name(predictor)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", "The feature will be removed")
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # a TTA shift's slices
        torch.onnx.export(
            graph,
            (torch.zeros(2, *image_shape, dtype=torch.uint8),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=False,  # onnxruntime folds as it loads the graph; here: 5x the export time
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff, magnitude = check_agreement(graph, data, image_shape, out)
    atomic_write_bytes(out, data)
    preprocess = preprocessing_name(predictor.transform)
    return Exported(out, ["batch", *image_shape], name, preprocess, predictor.tta, diff, magnitude)


def preprocessing_name(transform: Any) -> str:
    """A Standardizer's mode; no transform is scale01 (Predictor.inputs takes uint8 to [0, 1])."""
    return "scale01" if transform is None else getattr(transform, "mode", type(transform).__name__)


def check_agreement(
    graph: InferenceGraph, data: bytes, image_shape: tuple[int, int, int], out: Path
) -> tuple[float, float]:
    """(largest |onnxruntime - torch|, largest |torch|) on CHECK_BATCH seeded random uint8 images (an odd
    batch size, not the traced 2), refused over TOLERANCE * max(1, largest |torch|)."""
    images = torch.randint(
        0, 256, (CHECK_BATCH, *image_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = graph(images)
    got = onnx_outputs(onnx_session(data, where=out), images)
    diff, magnitude = float((got - expected).abs().max()), float(expected.abs().max())
    if not diff <= TOLERANCE * max(1.0, magnitude):
        raise TrainlabError(
            f"{out}: not written: onnxruntime's outputs differ from torch's by {diff:.3g} on {CHECK_BATCH} "
            f"random images (expected at most {TOLERANCE:g} x max(1, largest |output| {magnitude:.3g}))"
        )
    return diff, magnitude


def export_onnx(run_dir: Path | str, out: Path | str, progress: bool = True) -> Exported:
    """The ONNX graph of a finished run (its evaluated weights, preprocessing and TTA), written to `out`.
    `progress`: a bar over its two steps (load the run; trace, check with onnxruntime and write)."""
    with progress_bar(2, f"export {Path(run_dir).name}", progress) as advance:
        trained = load_trained(run_dir, device="cpu")
        advance()
        metadata = {
            "trainlab_classes": json.dumps(trained.classes),
            "trainlab_image_shape": json.dumps(list(trained.image_shape)),
            "trainlab_config": json.dumps(trained.config.to_dict()),
        }
        exported = export_predictor(trained.predictor, trained.image_shape, out, metadata)
        advance()
    return exported


def onnx_session(model: Path | str | bytes, threads: int | None = None, where: Path | None = None) -> Any:
    """An onnxruntime InferenceSession on CPU of an .onnx file or its bytes (`threads`: intra-op threads,
    default onnxruntime's; `where`: the path its errors name, for bytes)."""
    ort = require("onnxruntime", "running an ONNX graph")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, without a common base
        shown = where or model
        raise TrainlabError(
            f"{shown}: onnxruntime cannot load it ({str(e).strip().splitlines()[0]})"
        ) from None


def onnx_outputs(session: Any, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C, H, W) images through the session, `batch_size` at a time -> float32 (N, K)."""
    array = images.cpu().numpy()
    parts = [
        session.run(None, {INPUT_NAME: array[start : start + batch_size]})[0]
        for start in range(0, len(array), batch_size)
    ]
    return torch.from_numpy(np.concatenate(parts))


def compare_with_torch(
    trained: TrainedModel, path: Path | str, images: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    """onnxruntime against the run's torch eval path on the same uint8 `images`: the largest absolute
    output difference, the largest output magnitude, and (a classifier's) top-1 agreement."""
    session = onnx_session(path)
    expected = torch.cat(
        [trained.outputs(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    got = onnx_outputs(session, images, batch_size)
    result = {
        "images": len(images),
        "max_abs_diff": float((got - expected).abs().max()),
        "max_abs_output": float(expected.abs().max()),
    }
    if trained.predictor.task.name == "classification":
        result["top1_agreement"] = float((got.argmax(1) == expected.cpu().argmax(1)).double().mean())
    return result
