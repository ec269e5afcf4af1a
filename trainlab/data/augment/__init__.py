"""Batched, per-sample data augmentation on the data's device.

(Skeleton: issue 7 adds the operations, the spec parser and the benchmarks.)

    aug = Augment("hflip,translate=2,mixup=0.2", seed=0, num_classes=10)
    images, targets = aug(images, labels)   # images (B, C, H, W) uint8 or float; targets soft when mixing

The generator's state is part of the checkpoint (state_dict / load_state_dict), so a resumed run sees
the same augmentations.
"""

from __future__ import annotations

import torch

from trainlab.errors import ConfigError


class Augment:
    def __init__(self, spec: str = "", seed: int = 0, num_classes: int | None = None, device: str = "cpu"):
        if spec.strip():
            raise ConfigError(f"augmentation spec {spec!r}: augmentation is not implemented yet")
        self.spec, self.num_classes = spec, num_classes
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, labels

    def __bool__(self) -> bool:
        return bool(self.spec.strip())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
