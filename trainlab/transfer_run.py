"""`trainlab transfer SCENARIO`: the lecture's four transfer-learning recipes (DNN & CNN deck), as runs.

- small-similar (the lecture: cut the last layer, add an FC layer, freeze the rest, train the FC layer):
  every stage kept and frozen, a new head;
- small-different (keep only the early layers, add an FC layer, freeze, train): the first `--keep`
  stages (default: half of them), frozen, a new head;
- large-similar (replace the last FC layer, initialise the rest from the net, retrain everything):
  every stage from the source, all trained;
- large-different (fine-tune from the pretrained net, or train from scratch if that turns out worse):
  both runs, in OUT/finetune and OUT/scratch; the one with the better validation accuracy is kept.

The source is a trainlab run directory (`--source RUN_DIR`). Without one, the default source is trained
once and cached: the `cpu-fast` recipe (SpeedNet) on Fashion-MNIST classes 0-4 (T-shirt/top, Trouser,
Pullover, Dress, Coat), in ~/.cache/trainlab/sources/. The target run takes the source's model (name and
options), and the settings below; `--set` overrides any of them. Flips are off (augmentation and TTA),
as digits are not mirror-symmetric. Everything else is trainlab/training/transfer.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainlab.config import Config, load_config, parse_override
from trainlab.data.datasets import load_dataset
from trainlab.errors import ConfigError, TrainlabError
from trainlab.io import atomic_write_json, read_json
from trainlab.models.factory import model_from_config
from trainlab.models.stages import stage_names
from trainlab.run import RunResult, train
from trainlab.training.checkpoint import config_from

SCENARIOS = ("small-similar", "small-different", "large-similar", "large-different")
SOURCE_RECIPE = "cpu-fast"
SOURCE_DATASET = "fashion-mnist:classes=0-4"
SMALL = {"data.batch_size": 10, "train.epochs": 30}  # 10 labels per class: 5 steps an epoch
HEAD_LR = 4.0  # SpeedNet's logits are scaled by 1/9: a head trained alone needs a large rate
COMMON = {"data.augment": "", "train.tta": False}


def default_source_dir() -> Path:
    return Path.home() / ".cache" / "trainlab" / "sources" / "cpu-fast-fashion-mnist-0-4"


def default_source(progress: bool = True, out: Path | None = None, overrides: dict | None = None) -> Path:
    """The default source run (trained on first use, then reused): cpu-fast on Fashion-MNIST 0-4.
    `out` and `overrides` (a smaller one, for quick checks) change where and what is trained."""
    out = out or default_source_dir()
    if (out / "summary.json").is_file() and (out / "model.safetensors").is_file():
        return out
    cfg = load_config(SOURCE_RECIPE, {"data.dataset": SOURCE_DATASET, **(overrides or {})})
    train(cfg, out, overwrite=(out / "config.json").exists(), progress=progress)
    return out


def source_config(source: Path) -> Config:
    path = Path(source) / "config.json"
    if not path.is_file():
        raise TrainlabError(f"--source {source}: no config.json (expected a finished trainlab run directory)")
    return config_from(read_json(path), path)


def scenario_overrides(scenario: str, source: Path, keep: int | None, n_train: int) -> dict[str, Any]:
    """The recipe's config keys for `scenario` (before the user's --set)."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"transfer scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    src = source_config(source)
    model = {"model.name": src.model.name, "model.options": src.model.options}
    pretrained = {**model, "model.pretrained": str(source), "model.init": None}
    val = {"data.val_size": min(5000, n_train // 10)}
    if keep is not None and scenario != "small-different":
        raise ConfigError(f"--keep applies to small-different only, not {scenario}")
    if scenario == "small-similar":
        return {**COMMON, **val, **SMALL, **pretrained, "train.freeze": "backbone", "optim.lr": HEAD_LR}
    if scenario == "small-different":
        if keep is None:
            with_stages = load_config(None, model)
            keep = max(1, len(stage_names(model_from_config(with_stages, (1, 28, 28), 2))) // 2)
        return {
            **COMMON,
            **val,
            **SMALL,
            **pretrained,
            "model.keep_stages": keep,
            "train.freeze": "backbone",
            "optim.lr": HEAD_LR,
        }
    # large-similar and large-different alike (large-different also trains from scratch: run_transfer)
    return {**COMMON, **val, "data.batch_size": min(256, max(n_train // 20, 8)), **pretrained}


def run_transfer(
    scenario: str,
    dataset: str,
    source: Path | str | None = None,
    out: Path | str = "runs/transfer",
    overrides: list[str] = (),
    keep: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run `scenario` on `dataset` from `source` (default: the cached default source) into `out`;
    returns {scenario, source, runs: {name: test_accuracy}, chosen, out}."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"transfer scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    source = Path(source) if source is not None else default_source(progress)
    n_train = len(load_dataset(dataset).train_labels)
    base = {"data.dataset": dataset, **scenario_overrides(scenario, source, keep, n_train)}
    user = dict(map(parse_override, overrides))
    out = Path(out)
    runs: dict[str, RunResult] = {}
    arms = {"finetune": {}, "scratch": scratch_keys(source)} if scenario == "large-different" else {"": {}}
    for name, keys in arms.items():
        cfg = load_config(SOURCE_RECIPE, {**base, **keys, **user})
        runs[name] = train(cfg, out / name if name else out, overwrite=overwrite, progress=progress)
    monitor = lambda r: r.summary.get("best_val_accuracy") or 0.0  # noqa: E731
    chosen = max(runs, key=lambda name: monitor(runs[name]))
    result = {
        "scenario": scenario,
        "dataset": dataset,
        "source": str(source),
        "runs": {name or scenario: r.summary.get("test_accuracy") for name, r in runs.items()},
        "chosen": chosen or scenario,
        "out": str(out),
    }
    if len(runs) > 1:
        atomic_write_json(out / "transfer.json", result)
    return result


def scratch_keys(source: Path) -> dict[str, Any]:
    """From scratch: the source's own initialisation, no pretrained weights."""
    return {"model.pretrained": None, "model.init": source_config(source).model.init}
