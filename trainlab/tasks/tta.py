"""Test-time augmentation as a policy: the model's outputs averaged over several views of each input.

    eval.tta = "flip"            the image and its horizontal mirror (2 views; train.tta = true)
    eval.tta = "shift=2"         the image and its shifts by 2 pixels left, right, up and down (5 views)
    eval.tta = "flip,shift=2"    every shift of the image and of its mirror (10 views)
    eval.tta = "none"            the image alone

outputs(x) = 1/V sum_v model(view_v(x)), in float32. The views act on the model's input, after the
preprocessing, so a policy is the same in the final evaluation, `trainlab eval`, `trainlab predict` and
an exported graph. A shift pads by repeating the edge pixels (a zero pad would be the mean image after
standardisation, not the background) and crops back to the size. The lecture (DNN & CNN deck): a test
image's augmentations are evaluated and their results combined, as in AlexNet's 10 crops
(Krizhevsky et al. 2012).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainlab.errors import ConfigError
from trainlab.registry import suggest

MAX_SHIFT = 8  # pixels; more moves a 28x28 object out of its own frame
ITEMS = ("flip", "shift")


@dataclass(frozen=True)
class TTAPolicy:
    flip: bool = False
    shift: int = 0  # pixels; 0 = no shifted views

    def __bool__(self) -> bool:
        return self.flip or self.shift > 0

    def __str__(self) -> str:
        items = (["flip"] if self.flip else []) + ([f"shift={self.shift}"] if self.shift else [])
        return ",".join(items) or "none"

    @property
    def num_views(self) -> int:
        return (2 if self.flip else 1) * (5 if self.shift else 1)

    def views(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each view of the batch x (B, C, H, W): the shifts of x, then those of its mirror."""
        for image in (x, x.flip(-1)) if self.flip else (x,):
            yield image
            if self.shift:
                yield from shifted(image, self.shift)


def shifted(x: torch.Tensor, s: int) -> Iterator[torch.Tensor]:
    """x (B, C, H, W) moved by s pixels right, left, down and up, edge pixels repeated into the gap."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), mode="replicate")  # (B, C, H + 2s, W + 2s)
    for dy, dx in ((0, -s), (0, s), (-s, 0), (s, 0)):  # the crop's offset moves the content the other way
        yield padded[..., s + dy : s + dy + height, s + dx : s + dx + width]


def parse_tta(spec: str | bool | None | TTAPolicy, key: str = "eval.tta") -> TTAPolicy:
    """A policy from its spec ("none", "flip", "shift=2", "flip,shift=2"); True is "flip" (train.tta),
    False and None are "none". A bad spec is one ConfigError that names `key` and what it allows."""
    if isinstance(spec, TTAPolicy):
        return spec
    if spec is None or isinstance(spec, bool):
        return TTAPolicy(flip=bool(spec))
    if not isinstance(spec, str):
        raise ConfigError(f"{key}={spec!r}: expected a policy string such as 'flip' or 'flip,shift=2'")
    text = spec.strip().lower()
    if text in ("none", ""):
        return TTAPolicy()
    flip, shift, seen = False, 0, set()
    for item in (part.strip() for part in text.split(",")):
        name, eq, value = item.partition("=")
        name = name.strip()
        if name not in ITEMS:
            raise ConfigError(f"{key}={spec!r}: " + suggest(name, list(ITEMS), "test-time augmentation"))
        if name in seen:
            raise ConfigError(f"{key}={spec!r}: {name!r} appears twice (expected each item once)")
        seen.add(name)
        if name == "flip":
            if eq:
                raise ConfigError(f"{key}={spec!r}: 'flip' takes no value (expected 'flip', not {item!r})")
            flip = True
            continue
        value = value.strip()
        if not value.isdigit() or not 1 <= int(value) <= MAX_SHIFT:
            raise ConfigError(
                f"{key}={spec!r}: shift takes a whole number of pixels from 1 to {MAX_SHIFT} "
                f"(e.g. 'shift=2'), got {item!r}"
            )
        shift = int(value)
    return TTAPolicy(flip, shift)


def tta_of(eval_tta: str | None, train_tta: bool) -> TTAPolicy:
    """A run's policy: eval.tta when it is set, else train.tta (true: the mirror, "flip")."""
    return parse_tta(eval_tta if eval_tta is not None else train_tta)
