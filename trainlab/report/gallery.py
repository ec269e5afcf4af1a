"""Test images as a person checks a classifier: the most confident mistakes (what the model is surest
about and wrong, often a mislabelled or ambiguous image) and a random sample of predictions, each a
thumbnail with the true label, the predicted label and the predicted probability; and the augmentation
preview row (trainlab augment preview's grid, for the run's own spec and training images)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from trainlab.data.augment.preview import preview_grid


@dataclass(frozen=True)
class Prediction:
    index: int  # in the test split
    true: int
    predicted: int
    probability: float  # of the predicted class
    true_probability: float


def predictions(outputs: torch.Tensor, targets: torch.Tensor) -> list[Prediction]:
    """One Prediction per test image from logits (N, K) and labels (N,)."""
    probs = torch.softmax(outputs.float(), 1).cpu()
    top, predicted = probs.max(1)
    labels = targets.cpu()
    true_probs = probs.gather(1, labels[:, None])[:, 0]
    return [
        Prediction(i, t, p, q, r)
        for i, (t, p, q, r) in enumerate(
            zip(labels.tolist(), predicted.tolist(), top.tolist(), true_probs.tolist())
        )
    ]


def confident_mistakes(preds: list[Prediction], n: int) -> list[Prediction]:
    """The n wrong predictions with the highest predicted probability (ties: the earlier image)."""
    wrong = [p for p in preds if p.predicted != p.true]
    return sorted(wrong, key=lambda p: (-p.probability, p.index))[:n]


def random_predictions(preds: list[Prediction], n: int, seed: int) -> list[Prediction]:
    """n predictions drawn without replacement, in test-split order; the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(preds), generator=g)[:n].sort().values
    return [preds[i] for i in chosen.tolist()]


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail(image: torch.Tensor) -> bytes:
    """A uint8 image (C, H, W), C = 1 or 3, as PNG at its own size (the page enlarges it, pixelated)."""
    array = image.cpu().numpy()
    return png_bytes(array[0] if array.shape[0] == 1 else array[:3].transpose(1, 2, 0))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def gallery_html(chosen: list[Prediction], images, classes: list[str]) -> str:
    """Figures with a thumbnail and a caption; `images` is indexable by test index (a uint8 tensor or a
    streamed folder's FileImages)."""
    if not chosen:
        return "<p>(none)</p>"
    cards = []
    for p in chosen:
        image = images[torch.tensor([p.index])][0]
        true, predicted = html.escape(classes[p.true]), html.escape(classes[p.predicted])
        verdict = "right" if p.true == p.predicted else "wrong"
        cards.append(
            f'<figure class="card {verdict}" data-index="{p.index}">'
            f'<img alt="test image {p.index}" src="{data_uri(thumbnail(image))}">'
            f'<figcaption><span class="true">true: {true}</span><br>'
            f'<span class="pred">predicted: {predicted}</span><br>'
            f'<span class="prob">p = {p.probability:.3f}</span></figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(cards)}</div>'


def augmentation_preview(
    images: torch.Tensor, spec: str, seed: int, num_classes: int, n_aug: int = 8
) -> bytes:
    """PNG of the preview grid: each row a training image, then n_aug draws of the run's augmentation."""
    return png_bytes(preview_grid(images.cpu(), spec, n_aug, seed, num_classes))
