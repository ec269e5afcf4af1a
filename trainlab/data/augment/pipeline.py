"""`Augment`: a parsed spec, fused into stages, applied to a whole batch on its device.

The stages, in spec order: all affine ops fused into one resampling pass (at the place of the first of
them), all colour ops fused into one colour matrix (at the place of the first of them), every other op
on its own; the mixing ops always last. Geometric and per-pixel colour maps commute except at the zero
border and in the mean grey that contrast uses, so gathering each kind in one place changes what a
sample can look like very little and saves whole passes over the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from trainlab.data.augment.base import Op
from trainlab.data.augment.geometric import AffineStage
from trainlab.data.augment.mix import MixStage
from trainlab.data.augment.photometric import ColorStage
from trainlab.data.augment.spec import build_ops, format_spec
from trainlab.errors import ConfigError, TrainlabError


def plan_stages(ops: list[Op]) -> list:
    """Spec order, with all affine ops in one AffineStage and all colour ops in one ColorStage."""
    stages, fused = [], {"affine": AffineStage, "color": ColorStage}
    for op in ops:
        if op.kind in fused:
            group = [o for o in ops if o.kind == op.kind]
            if group[0] is op:
                stages.append(fused[op.kind](group))
        elif op.kind != "mix":
            stages.append(op)
    return stages


def to_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def restore_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if x.dtype == dtype:
        return x
    if dtype == torch.uint8:
        return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return x.to(dtype)


class Augment:
    """Per-sample augmentation of (B, C, H, W) batches, uint8 or float in [0, 1], on their device.

        aug = Augment("hflip,pad_crop=4,color_jitter=0.4,rotate=10,mixup=0.2", seed=0, num_classes=10)
        images, targets = aug(images, labels)   # targets (B, num_classes) when a mixing op is present

    Images keep their dtype and shape; float images are clamped to [0, 1] by colour and tone ops. The
    generator lives on `device`; its state is `state_dict()`, so a resumed run continues the stream.
    """

    def __init__(
        self, spec: str | dict | list = "", seed: int = 0, num_classes: int | None = None, device="cpu"
    ):
        self.ops = build_ops(spec)
        self.seed, self.num_classes, self.device = seed, num_classes, torch.device(device)
        mixing = [op for op in self.ops if op.kind == "mix"]
        if mixing and not num_classes:
            raise ConfigError(f"augmentation {mixing[0].name} makes soft targets and needs num_classes")
        self.stages = plan_stages(self.ops)
        self.mix = MixStage(mixing, num_classes) if mixing else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4:
            raise TrainlabError(f"augment expects (B, C, H, W) images, got shape {tuple(images.shape)}")
        if images.device.type != self.device.type:
            raise ConfigError(f"Augment(device={str(self.device)!r}) was given images on {images.device}")
        x, targets = images, labels
        for stage in self.stages:
            copy_only = isinstance(stage, AffineStage) and stage.integer
            x = stage(x if copy_only else to_float(x), self.generator)
        if self.mix is not None:
            x, targets = self.mix(to_float(x), labels, self.generator)
        return restore_dtype(x, images.dtype), targets

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __repr__(self) -> str:
        return f"Augment({format_spec(self.ops)!r}, seed={self.seed})"

    def get_config(self) -> dict[str, Any]:
        """The resolved config; `Augment(**config)` rebuilds it."""
        spec = {op.name: op.get_config() for op in self.ops}
        return {"spec": spec, "seed": self.seed, "num_classes": self.num_classes, "device": str(self.device)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Augment:
        return cls(**config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"].cpu())
