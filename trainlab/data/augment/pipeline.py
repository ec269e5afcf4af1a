"""`Augment`: a parsed spec, fused into stages, applied to a whole batch on its device.

The stages: every colour op fused into one colour map and every affine op into one resampling pass,
these two together (colour first) at the place of the first colour or affine op in the spec; every
other op on its own, in spec order; the mixing ops last. Per-pixel colour maps and geometric maps
commute except at the border, so gathering them saves whole passes over the batch; colour goes first
so that the border the geometry brings in stays black (zero), and contrast uses the whole image's mean.
"""

from __future__ import annotations

from typing import Any

import torch

from trainlab.data.augment.base import Op, Scratch
from trainlab.data.augment.geometric import AffineStage
from trainlab.data.augment.mix import MixStage
from trainlab.data.augment.photometric import ColorStage
from trainlab.data.augment.spec import build_ops, format_spec
from trainlab.errors import ConfigError, TrainlabError


def plan_stages(ops: list[Op]) -> list:
    """Colour then affine stage where the first of either is written; other ops in order; no mixing."""
    colour = [op for op in ops if op.kind == "color"]
    affine = [op for op in ops if op.kind == "affine"]
    fused = [ColorStage(colour)] * bool(colour) + [AffineStage(affine)] * bool(affine)
    if colour and affine:  # the colour result is only read by the resampling: keep it in a reused buffer
        fused[0].scratch = Scratch()
    stages, placed = [], False
    for op in ops:
        if op.kind in ("color", "affine") and not placed:
            stages, placed = stages + fused, True
        elif op.kind == "pixel":
            stages.append(op)
    return stages


def restore_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Back to the input's dtype; `x` is a tensor of this pipeline, so it may be overwritten."""
    if x.dtype == dtype:
        return x
    if dtype == torch.uint8:
        return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
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
        self.scratch = Scratch()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4:
            raise TrainlabError(f"augment expects (B, C, H, W) images, got shape {tuple(images.shape)}")
        if images.device.type != self.device.type:
            raise ConfigError(f"Augment(device={str(self.device)!r}) was given images on {images.device}")
        x, targets = images, labels
        for stage in self.stages:
            copy_only = isinstance(stage, AffineStage) and stage.integer
            x = stage(x if copy_only else self.to_float(x), self.generator)
        if self.mix is not None:
            x, targets = self.mix(self.to_float(x), labels, self.generator)
        return (x if x is images else restore_dtype(x, images.dtype)), targets

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (float64 stays); uint8 [0, 255] -> [0, 1] in a reused buffer, since uint8 output is
        converted back into a new tensor at the end."""
        if x.dtype == torch.uint8:
            return self.scratch.get("float", tuple(x.shape), torch.float32, x.device).copy_(x).div_(255)
        return x if x.dtype in (torch.float32, torch.float64) else x.float()

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
