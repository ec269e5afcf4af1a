"""Batched, per-sample data augmentation on the data's device.

    aug = Augment("hflip,translate=2,mixup=0.2", seed=0, num_classes=10)
    images, targets = aug(images, labels)   # images (B, C, H, W) uint8 or float; targets soft when mixing

One file per family: geometric (flips, crops, affine), photometric (colour jitter, PCA lighting), tone
(solarize, posterize, equalize, ...), distort (lens, elastic), erase (cutout, random erasing), mix
(mixup, cutmix), policy (RandAugment, TrivialAugment); spec parses the spec strings and tables,
pipeline fuses the ops into stages, preview draws a grid. The generator's state is part of the
checkpoint (state_dict / load_state_dict), so a resumed run sees the same augmentations.
"""

from trainlab.data.augment import distort, erase, geometric, mix, photometric, policy, tone  # noqa: F401  (registers)
from trainlab.data.augment.base import AUGMENTATIONS, list_augmentations
from trainlab.data.augment.pipeline import Augment

__all__ = ["AUGMENTATIONS", "Augment", "list_augmentations"]
