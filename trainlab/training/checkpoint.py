"""Checkpoints without pickle: one safetensors file holds every tensor, and its metadata header holds
the JSON for everything else (resolved config, optimizer hyper-parameters, trainer state).

Tensor keys are namespaced: `model.*`, `optim.*`, `rng.*`, `loader.*`, `augment.*`, `preprocess.*`,
`ema.*`, `callbacks.*` (each callback's state_dict()) and `progress.*` (the epoch in flight, for a
mid-epoch resume point). Writes are atomic (trainlab.io): temp file, fsync, rename.

Integrity: the header also holds `trainlab_sha256`, a SHA-256 digest of the metadata JSON and of every
tensor's name, dtype, shape and bytes. Every load verifies it (resume, eval, predict, transfer all go
through `load_checkpoint`), so a flipped bit is refused before it can be trained on, evaluated, or
written back over the file. A file written before trainlab stored digests (no `trainlab_sha256`) loads
without a check and without a warning: refusing would strand every older run, and a warning line would
follow every eval of it; a resumed run's next checkpoint has a digest. Only the two metadata keys
trainlab writes are accepted, so a damaged key name is refused rather than read as "no digest".

Run files are untrusted input: `load_model_file` checks model.safetensors' metadata against a schema,
and `model_with_weights` builds the model its config describes on the meta device (no memory) and
compares every tensor name and shape with the file before allocating anything; a resume checks with
`check_checkpoint_model` that config.json names the model its checkpoint holds. Each failure is one
TrainlabError line that names the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from trainlab.config import Config
from trainlab.errors import ConfigError, TrainlabError
from trainlab.io import atomic_write_bytes
from trainlab.models.factory import model_from_config

DIGEST_KEY = "trainlab_sha256"
MAX_IMAGE_SIDE = 4096  # pixels: a model file that declares larger images is refused before any allocation


def tensor_digest(tensors: dict[str, torch.Tensor], meta_text: str) -> str:
    """SHA-256 of the metadata JSON, then of each tensor in name order: its name, dtype and shape, then
    its bytes. Names, dtypes and shapes are covered too, so a header edit that re-reads the same bytes
    as another dtype or shape is caught as well as a flipped data byte."""
    digest = hashlib.sha256(meta_text.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` (any device; copied to CPU, contiguous) and JSON-able `meta` atomically, with the
    digest of both in the header."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta_text = json.dumps(meta)
    metadata = {"trainlab": meta_text, DIGEST_KEY: tensor_digest(flat, meta_text)}
    atomic_write_bytes(path, save(flat, metadata=metadata))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) from a checkpoint written by save_checkpoint, its digest verified; TrainlabError
    when it is unreadable, damaged, or not a trainlab file. The file is left as it is."""
    path = Path(path)
    metadata, tensors = read_safetensors(path, with_tensors=True)
    meta_text = trainlab_metadata(metadata, path)
    if DIGEST_KEY in metadata and tensor_digest(tensors, meta_text) != metadata[DIGEST_KEY]:
        raise TrainlabError(
            f"{path}: checksum mismatch: the file changed after trainlab wrote it (damaged or edited); "
            "refused and left as it is"
        )
    return tensors, parse_meta(meta_text, path)


def read_safetensors(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors); safetensors validates the header and every offset against the file."""
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except FileNotFoundError:
        raise TrainlabError(f"{path}: checkpoint not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainlabError(f"{path}: not a readable trainlab checkpoint ({one_line(e)})") from None
    return metadata, tensors


def trainlab_metadata(metadata: dict[str, str], path: Path) -> str:
    if "trainlab" not in metadata:
        raise TrainlabError(f"{path}: no trainlab metadata in its header (not a file trainlab wrote)")
    unexpected = sorted(set(metadata) - {"trainlab", DIGEST_KEY})
    if unexpected:
        raise TrainlabError(
            f"{path}: unexpected header metadata {short(unexpected)} (expected 'trainlab' and '{DIGEST_KEY}')"
        )
    return metadata["trainlab"]


def parse_meta(text: str, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TrainlabError(f"{path}: its trainlab metadata is not valid JSON ({one_line(e)})") from None
    if not isinstance(meta, dict):
        raise TrainlabError(
            f"{path}: its trainlab metadata is a JSON {type(meta).__name__}, expected an object"
        )
    return meta


def config_from(data: Any, where: Path) -> Config:
    """The Config a run file records; a ConfigError that names the file when it is not one."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the config is a JSON {type(data).__name__}, expected an object")
    try:
        return Config.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: the config is nested too deeply to be a trainlab config") from None


def check_checkpoint_model(cfg: Config, meta: dict[str, Any], path: Path) -> None:
    """TrainlabError unless the checkpoint at `path` (its `meta`, as load_checkpoint returns it) holds the
    weights of the model `cfg` describes: a run's config.json that names another model or other options
    (edited, or copied from another run) is refused in one line, before a resume loads the weights into
    the wrong model. A checkpoint without a recorded config (a bare Trainer's) is not checked."""
    if "config" not in meta:
        return
    held = config_from(meta["config"], path).model
    if (held.name, held.options) != (cfg.model.name, cfg.model.options):
        raise TrainlabError(
            f"{path}: holds the weights of model {held.name!r} {short(held.options)}, but the run's config "
            f"names model {cfg.model.name!r} {short(cfg.model.options)} (config.json is not this run's?)"
        )


@dataclass
class ModelFile:
    """model.safetensors, checked against its schema: the tensors (`model.*`, `preprocess.*`), the run's
    config, the class names (one per output) and the image shape (C, H, W) the model was trained on."""

    path: Path
    tensors: dict[str, torch.Tensor]
    config: Config
    classes: list[str]
    image_shape: tuple[int, int, int]


def load_model_file(path: Path | str) -> ModelFile:
    """A finished run's model file, digest verified and its metadata checked; NaN or infinite weights
    are refused too (they would predict "nan")."""
    path = Path(path)
    tensors, meta = load_checkpoint(path)
    missing = [k for k in ("config", "classes", "image_shape") if k not in meta]
    if missing:
        raise TrainlabError(f"{path}: its metadata has no {', '.join(missing)} (expected a run's model file)")
    classes, shape = meta["classes"], meta["image_shape"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise TrainlabError(f"{path}: metadata 'classes' is {short(classes)}, expected a list of names")
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(type(v) is int for v in shape)
        and shape[0] in (1, 3)
        and all(1 <= v <= MAX_IMAGE_SIDE for v in shape[1:])
    ):
        raise TrainlabError(
            f"{path}: metadata 'image_shape' is {short(shape)}, expected [C, H, W] with C 1 or 3 "
            f"and 1 <= H, W <= {MAX_IMAGE_SIDE}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainlabError(
                f"{path}: tensor {name!r} holds NaN or infinite values (a diverged run, or a damaged file)"
            )
    return ModelFile(path, tensors, config_from(meta["config"], path), classes, tuple(shape))


def model_with_weights(
    cfg: Config,
    input_shape: tuple[int, ...],
    num_outputs: int,
    tensors: dict[str, torch.Tensor],
    path: Path,
    prefix: str = "model",
) -> nn.Module:
    """The model `cfg` describes for `input_shape` and `num_outputs`, holding the `prefix.*` tensors.

    It is built first on the meta device, which allocates nothing, and every name and shape is compared
    with the file's: a config that does not fit the weights (another model, other widths, another class
    count, a hostile 4 TB layer) is refused in one line before any memory is spent, and the real build
    then allocates no more than the file holds.
    """
    weights = unprefixed(prefix, tensors)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init=None))  # the weights replace it
    for key, value in cfg.model.options.items():  # each entry builds a layer with weights: bound the build
        if isinstance(value, list) and len(value) > len(weights):
            raise TrainlabError(
                f"{path}: model.{key} has {len(value)} entries, more than the file's {len(weights)} weights"
            )
    with torch.device("meta"):
        skeleton = build_model(cfg, input_shape, num_outputs, path)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != stored:
        raise TrainlabError(
            f"{path}: its weights do not fit model {cfg.model.name!r} as its config builds it for input "
            f"{list(input_shape)} and {num_outputs} outputs (one per class): "
            f"{state_differences(expected, stored, prefix)}"
        )
    model = build_model(cfg, input_shape, num_outputs, path)
    model.load_state_dict(weights)
    return model


def build_model(cfg: Config, input_shape: tuple[int, ...], num_outputs: int, path: Path) -> nn.Module:
    try:
        return model_from_config(cfg, input_shape, num_outputs)
    except TrainlabError as e:
        raise TrainlabError(f"{path}: {e}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RuntimeError) as e:
        # the file's model options reach the model's constructor: a value of the wrong kind ends here
        raise TrainlabError(
            f"{path}: its config does not build model {cfg.model.name!r} ({type(e).__name__}: {one_line(e)})"
        ) from None


def state_differences(expected: dict[str, tuple], stored: dict[str, tuple], prefix: str) -> str:
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    parts = [f"missing {short([f'{prefix}.{k}' for k in missing])}"] if missing else []
    parts += [f"unexpected {short([f'{prefix}.{k}' for k in unexpected])}"] if unexpected else []
    parts += [
        f"{prefix}.{k} is {list(stored[k])} where the model has {list(expected[k])}" for k in reshaped[:3]
    ]
    parts += [f"and {len(reshaped) - 3} more of another shape"] if len(reshaped) > 3 else []
    return "; ".join(parts)


def short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (per-parameter buffers) and JSON (hyper-parameters)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, buffers in state["state"].items():
        for name, value in buffers.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars, "tensors": sorted(tensors)}
    return tensors, meta


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    missing = sorted(set(meta.get("tensors", ())) - set(tensors))  # older checkpoints: no list to check
    if missing:
        raise KeyError(f"optimizer buffers {short(missing)} are missing")
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def pack_state(state: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested JSON-able `state` holding tensors into (tensors keyed `prefix.path`, JSON in which
    each tensor is replaced by {"__tensor__": key}); unpack_state puts it back together."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    return tensors, walk(state, prefix)


def unpack_state(packed: Any, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> Any:
    if isinstance(packed, dict):
        if set(packed) == {"__tensor__"}:
            return tensors[packed["__tensor__"]].to(device)
        return {k: unpack_state(v, tensors, device) for k, v in packed.items()}
    if isinstance(packed, list):
        return [unpack_state(v, tensors, device) for v in packed]
    return packed
